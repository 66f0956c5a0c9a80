/**
 * `mm-<pid>.img`: a process's VMAs (images.md §6.3, §6.4, §7.4).
 *
 * @module
 */
import { MmEntrySchema, type VmaEntry } from "../../proto/gen/mm_pb.ts";
import {
  MAP_ANONYMOUS,
  MAP_HUGETLB,
  MAP_LOCKED,
  MAP_PRIVATE,
  PAGE_SIZE,
  VMA_AREA_VDSO,
  VMA_AREA_VSYSCALL,
  VMA_AREA_VVAR,
} from "./constants.ts";
import { ImageError } from "./errors.ts";
import { decodeFraming, decodeRecord, onlyRecord } from "./framing.ts";
import { hex, safeNumber } from "./_util.ts";

/** One VMA of a dumped process. */
export interface Vma {
  /** First byte (page aligned). */
  start: number;
  /** One past the last byte (page aligned). */
  end: number;
  /** `PROT_*` bits. */
  prot: number;
  /** `MAP_*` bits. */
  flags: number;
  /** CRIU `VMA_*` status bits. */
  status: number;
  /** File offset of a file mapping. */
  pgoff: number;
  /** Shared memory id or file id. */
  shmid: number;
}

/** The parts of `mm-<pid>.img` the daemon uses. */
export interface Mm {
  /** Path of the image. */
  file: string;
  /**
   * VMAs by ascending address, non-overlapping. The vsyscall page (at
   * 0xffffffffff600000, above every user address and above 2^53) is left
   * out: it is never lazy and CRIU does not restore it as a mapping.
   */
  vmas: Vma[];
}

/**
 * Whether a VMA's pages can be lazy (`vma_entry_can_be_lazy`): private
 * anonymous, not locked, not hugetlb, not vDSO/vvar/vsyscall.
 */
export function canBeLazy(vma: Pick<Vma, "flags" | "status">): boolean {
  const has = (bits: number, bit: number) => (bits & bit) === bit;
  return has(vma.flags, MAP_ANONYMOUS) && has(vma.flags, MAP_PRIVATE) &&
    !has(vma.flags, MAP_LOCKED) && !has(vma.flags, MAP_HUGETLB) &&
    !has(vma.status, VMA_AREA_VDSO) && !has(vma.status, VMA_AREA_VVAR) &&
    !has(vma.status, VMA_AREA_VSYSCALL);
}

const SAFE_LIMIT = 2n ** 53n;

/**
 * Parses `mm-<pid>.img` and checks its VMAs: page aligned, start < end,
 * sorted and non-overlapping. Errors name the record's offset and the VMA's
 * index in it.
 */
export function parseMm(
  bytes: Uint8Array,
  options: { file: string; imgVersion: number },
): Mm {
  const { file } = options;
  const record = onlyRecord(
    decodeFraming(bytes, { ...options, kind: "mm" }),
    file,
  );
  const entry = decodeRecord(MmEntrySchema, record, { file });
  const vmas: Vma[] = [];
  entry.vmas.forEach((v, i) => {
    if (v.start >= SAFE_LIMIT && (v.status & VMA_AREA_VSYSCALL) !== 0) return;
    const vma = toVma(v, { file, offset: record.offset, what: `vma #${i}` });
    const prev = vmas.at(-1);
    const bad = vma.start % PAGE_SIZE !== 0 || vma.end % PAGE_SIZE !== 0
      ? "not page aligned"
      : vma.start >= vma.end
      ? "empty or inverted"
      : prev && vma.start < prev.end
      ? `overlaps or precedes the previous one ending at ${hex(prev.end)}`
      : undefined;
    if (bad) {
      throw new ImageError(
        { file, offset: record.offset },
        `vma #${i} [${hex(vma.start)}, ${hex(vma.end)}) is ${bad}`,
      );
    }
    vmas.push(vma);
  });
  return { file, vmas };
}

function toVma(
  v: VmaEntry,
  where: { file: string; offset: number; what: string },
): Vma {
  const num = (value: bigint, field: string) =>
    safeNumber(value, { ...where, what: `${where.what} ${field}` });
  return {
    start: num(v.start, "start"),
    end: num(v.end, "end"),
    prot: v.prot,
    flags: v.flags,
    status: v.status,
    pgoff: num(v.pgoff, "pgoff"),
    shmid: num(v.shmid, "shmid"),
  };
}
