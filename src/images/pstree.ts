/**
 * `pstree.img`: the dumped process tree (images.md §6.2).
 *
 * @module
 */
import { PstreeEntrySchema } from "../../proto/gen/pstree_pb.ts";
import { ImageError } from "./errors.ts";
import { decodeFraming, decodeRecord } from "./framing.ts";

/** One process of the dumped tree; ids are image (namespace) pids. */
export interface PstreeEntryInfo {
  /** Image pid; names the process's `mm-`, `pagemap-`, `core-` files. */
  pid: number;
  /** Parent's image pid, 0 for the root. */
  ppid: number;
  /** Process group. */
  pgid: number;
  /** Session. */
  sid: number;
  /** Thread ids, the leader first. */
  threads: number[];
}

/**
 * Parses `pstree.img`: one record per process, zombies included (each
 * counts towards the processes restore will hand over). Pids must be
 * non-zero and unique, since they name per-process files.
 */
export function parsePstree(
  bytes: Uint8Array,
  options: { file: string; imgVersion: number },
): PstreeEntryInfo[] {
  const { file } = options;
  const records = decodeFraming(bytes, { ...options, kind: "pstree" });
  if (records.length === 0) {
    throw new ImageError({ file, offset: bytes.length }, "no processes");
  }
  const seen = new Set<number>();
  return records.map((record) => {
    const e = decodeRecord(PstreeEntrySchema, record, { file });
    if (e.pid === 0 || seen.has(e.pid)) {
      throw new ImageError(
        { file, offset: record.offset },
        e.pid === 0 ? "pid 0" : `duplicate pid ${e.pid}`,
      );
    }
    seen.add(e.pid);
    return {
      pid: e.pid,
      ppid: e.ppid,
      pgid: e.pgid,
      sid: e.sid,
      threads: [...e.threads],
    };
  });
}
