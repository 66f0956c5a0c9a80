// crit, CRIU's reference decoder, as the oracle for the image tests. `crit
// show` prints JSON: addresses of (criu).hex fields as "0x..." strings,
// flag fields as "NAME | NAME | 0x.." strings (names from pycriu's maps),
// and leaves out fields that are not set.
import { CRIT, runOk } from "../e2e/env.ts";

/** The JSON `crit show` prints for an image. */
export interface CritImage {
  magic: string;
  // deno-lint-ignore no-explicit-any
  entries: any[];
}

/** Runs `crit show FILE`. */
export async function critShow(file: string): Promise<CritImage> {
  return JSON.parse((await runOk(CRIT, ["show", file])).stdout);
}

/** pycriu's flag names (pb2dict.py) that crit prints. */
export const CRIT_FLAGS: Record<string, number> = {
  PROT_READ: 0x1,
  PROT_WRITE: 0x2,
  PROT_EXEC: 0x4,
  MAP_SHARED: 0x1,
  MAP_PRIVATE: 0x2,
  MAP_ANON: 0x20,
  MAP_GROWSDOWN: 0x100,
  VMA_AREA_REGULAR: 1 << 0,
  VMA_AREA_STACK: 1 << 1,
  VMA_AREA_VSYSCALL: 1 << 2,
  VMA_AREA_VDSO: 1 << 3,
  VMA_AREA_HEAP: 1 << 5,
  VMA_FILE_PRIVATE: 1 << 6,
  VMA_FILE_SHARED: 1 << 7,
  VMA_ANON_SHARED: 1 << 8,
  VMA_ANON_PRIVATE: 1 << 9,
  VMA_AREA_SYSVIPC: 1 << 10,
  VMA_AREA_SOCKET: 1 << 11,
  VMA_AREA_VVAR: 1 << 12,
  VMA_AREA_AIORING: 1 << 13,
  VMA_AREA_MEMFD: 1 << 14,
  VMA_AREA_SHSTK: 1 << 15,
  VMA_UNSUPP: 2 ** 31,
  PE_PARENT: 1,
  PE_LAZY: 2,
  PE_PRESENT: 4,
};

/** A crit flags string ("PE_LAZY | PE_PRESENT", "0x40000", "") as a number. */
export function critFlags(value: string | number): number {
  if (typeof value === "number") return value;
  if (value === "") return 0;
  return value.split("|").map((s) => s.trim()).reduce((sum, name) => {
    const v = name.startsWith("0x") ? parseInt(name, 16) : CRIT_FLAGS[name];
    if (v === undefined) throw new Error(`unknown crit flag ${name}`);
    return sum + v;
  }, 0);
}

/** A crit hex string ("0x7f...") as a bigint; plain numbers too. */
export function critBig(value: string | number): bigint {
  return BigInt(value);
}
