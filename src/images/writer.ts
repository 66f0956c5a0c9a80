/**
 * Writing images: for tests, tools and synthetic parent chains. Output is
 * byte-compatible with CRIU's (same framing, fields in number order,
 * required fields always written, repeated scalars unpacked), so `crit`
 * decodes it.
 *
 * @module
 */
import {
  create,
  type DescMessage,
  type Message,
  toBinary,
} from "@bufbuild/protobuf";
import { join } from "node:path";
import { CoreEntrySchema } from "../../proto/gen/core_pb.ts";
import { InventoryEntrySchema, Lsmtype } from "../../proto/gen/inventory_pb.ts";
import {
  type MmEntry,
  MmEntrySchema,
  VmaEntrySchema,
} from "../../proto/gen/mm_pb.ts";
import {
  type PagemapEntry,
  PagemapEntrySchema,
  type PagemapHead,
  PagemapHeadSchema,
} from "../../proto/gen/pagemap_pb.ts";
import {
  type PstreeEntry,
  PstreeEntrySchema,
} from "../../proto/gen/pstree_pb.ts";
import { TaskKobjIdsEntrySchema } from "../../proto/gen/task_kobj_ids_pb.ts";
import {
  IMG_VERSION_V1_1,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PAGE_SIZE,
  PE_PRESENT,
  PROT_READ,
  PROT_WRITE,
  VMA_ANON_PRIVATE,
  VMA_AREA_REGULAR,
} from "./constants.ts";
import { encodeFraming, type ImageKind } from "./framing.ts";
import { compatFlags } from "./pagemap.ts";

// Record types per image kind: the first record's, then the others'.
const SCHEMAS: Record<ImageKind, readonly DescMessage[]> = {
  inventory: [InventoryEntrySchema],
  pstree: [PstreeEntrySchema],
  mm: [MmEntrySchema],
  pagemap: [PagemapHeadSchema, PagemapEntrySchema],
  core: [CoreEntrySchema],
  ids: [TaskKobjIdsEntrySchema],
};

/**
 * The message type of record `index` of an image of `kind` (a pagemap's
 * first record is its head; every other image has one record type).
 */
export function recordSchema(kind: ImageKind, index: number): DescMessage {
  const schemas = SCHEMAS[kind];
  return schemas[Math.min(index, schemas.length - 1)];
}

/** Options of {@linkcode encodeImage}. */
export interface EncodeOptions {
  /** Image-set version: 2 (default) writes the head magic, 1 does not. */
  imgVersion?: 1 | 2;
}

/**
 * Encodes protobuf messages as a complete image of `kind`. A pagemap takes
 * a `PagemapHead` then `PagemapEntry` messages; the other kinds one message
 * type each (single-record kinds accept several, to build broken images).
 *
 * @throws {TypeError} if a message has the wrong type for its position.
 */
export function encodeImage(
  kind: ImageKind,
  records: readonly Message[],
  options: EncodeOptions = {},
): Uint8Array {
  const payloads = records.map((m, i) => {
    const schema = recordSchema(kind, i);
    if (m.$typeName !== schema.typeName) {
      throw new TypeError(
        `${kind} record #${i} must be ${schema.typeName}, not ${m.$typeName}`,
      );
    }
    return toBinary(schema, m);
  });
  return encodeFraming(payloads, {
    kind,
    imgVersion: options.imgVersion ?? IMG_VERSION_V1_1,
  });
}

/** Writes {@linkcode encodeImage}'s output to `path`. */
export function writeImage(
  path: string,
  image: { kind: ImageKind; records: readonly Message[] } & EncodeOptions,
): void {
  Deno.writeFileSync(path, encodeImage(image.kind, image.records, image));
}

/** A VMA of a synthetic process; defaults: anonymous private read-write. */
export interface SyntheticVma {
  /** First byte. */
  start: number;
  /** One past the last byte. */
  end: number;
  /** `PROT_*` (default read|write). */
  prot?: number;
  /** `MAP_*` (default private|anonymous). */
  flags?: number;
  /** `VMA_*` (default regular|anon private). */
  status?: number;
  /** File offset (default 0). */
  pgoff?: number;
  /** Shmem/file id (default 0). */
  shmid?: number;
}

/** A pagemap entry of a synthetic process. */
export interface SyntheticEntry {
  /** Address of the first page. */
  vaddr: number;
  /** Number of pages. */
  nrPages: number;
  /** `PE_*` flags; leave out to write no flags field (a pre-flags image). */
  flags?: number;
  /** The deprecated `in_parent` field (written when given). */
  inParent?: boolean;
  /** Write CRIU 4.2's layout: the count in field 5, 0 in field 2. */
  nrPages64?: boolean;
}

/** One process of a synthetic image directory. */
export interface SyntheticProcess {
  /** Image pid. */
  pid: number;
  /** Parent pid (default 0). */
  ppid?: number;
  /** Threads (default `[pid]`). */
  threads?: number[];
  /** VMAs for `mm-<pid>.img` (the file is written only when given). */
  vmas?: SyntheticVma[];
  /** Entries for `pagemap-<pid>.img` and its pages file (written only when given). */
  pagemap?: SyntheticEntry[];
  /** `pages_id` of the pagemap (default: 1 + the process's index). */
  pagesId?: number;
}

/** A synthetic image directory for {@linkcode writeImageDir}. */
export interface SyntheticDir {
  /** The processes, in `pstree.img` order. */
  processes: SyntheticProcess[];
  /** Image-set version (default 2). */
  imgVersion?: 1 | 2;
  /** Target of a `parent` symlink, written as given (relative, like CRIU). */
  parent?: string;
  /** Tag stamped into every page of this directory (default 0). */
  tag?: number;
  /**
   * Page data of `PE_PRESENT` entries: `all` (default) stamps every page;
   * `first` stamps only each entry's first page and leaves the rest a hole,
   * for entries of many gigabytes.
   */
  pages?: "all" | "first";
}

/**
 * The contents the writer gives the page at dump-time address `addr`: the
 * address (u64 LE), then `tag` (u32 LE), then zeros. {@linkcode readStamp}
 * reads them back.
 */
export function stampPage(addr: number, tag: number): Uint8Array {
  const page = new Uint8Array(PAGE_SIZE);
  const view = new DataView(page.buffer);
  view.setBigUint64(0, BigInt(addr), true);
  view.setUint32(8, tag, true);
  return page;
}

/** The `{ addr, tag }` written by {@linkcode stampPage}. */
export function readStamp(page: Uint8Array): { addr: number; tag: number } {
  const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
  return {
    addr: Number(view.getBigUint64(0, true)),
    tag: view.getUint32(8, true),
  };
}

/**
 * Writes a whole image directory (created if needed): `inventory.img`,
 * `pstree.img`, and per process `mm-<pid>.img`, `pagemap-<pid>.img` and
 * `pages-<id>.img`, plus the optional `parent` link.
 */
export function writeImageDir(path: string, spec: SyntheticDir): void {
  Deno.mkdirSync(path, { recursive: true });
  const imgVersion = spec.imgVersion ?? IMG_VERSION_V1_1;
  const put = (name: string, kind: ImageKind, records: Message[]) =>
    writeImage(join(path, name), { kind, records, imgVersion });
  put("inventory.img", "inventory", [
    create(InventoryEntrySchema, {
      imgVersion,
      fdinfoPerId: true,
      nsPerId: true,
      lsmtype: Lsmtype.NO_LSM,
    }),
  ]);
  put("pstree.img", "pstree", spec.processes.map((p) => pstreeEntry(p)));
  spec.processes.forEach((p, i) => {
    if (p.vmas) put(`mm-${p.pid}.img`, "mm", [mmRecord(p.vmas)]);
    if (p.pagemap) {
      const pagesId = p.pagesId ?? i + 1;
      put(
        `pagemap-${p.pid}.img`,
        "pagemap",
        pagemapRecords(p.pagemap, { pagesId }),
      );
      writePages(join(path, `pages-${pagesId}.img`), {
        entries: p.pagemap,
        spec,
      });
    }
  });
  if (spec.parent !== undefined) {
    Deno.symlinkSync(spec.parent, join(path, "parent"));
  }
}

function pstreeEntry(p: SyntheticProcess): PstreeEntry {
  return create(PstreeEntrySchema, {
    pid: p.pid,
    ppid: p.ppid ?? 0,
    pgid: p.pid,
    sid: p.pid,
    threads: p.threads ?? [p.pid],
  });
}

/**
 * An `MmEntry` holding `vmas` (numbers up to 2^64 are fine where exactly
 * representable, e.g. the vsyscall page) and zeros in the other required
 * fields.
 */
export function mmRecord(vmas: readonly SyntheticVma[]): MmEntry {
  const zero = 0n;
  return create(MmEntrySchema, {
    mmStartCode: zero,
    mmEndCode: zero,
    mmStartData: zero,
    mmEndData: zero,
    mmStartStack: zero,
    mmStartBrk: zero,
    mmBrk: zero,
    mmArgStart: zero,
    mmArgEnd: zero,
    mmEnvStart: zero,
    mmEnvEnd: zero,
    exeFileId: 0,
    vmas: vmas.map((v) =>
      create(VmaEntrySchema, {
        start: BigInt(v.start),
        end: BigInt(v.end),
        pgoff: BigInt(v.pgoff ?? 0),
        shmid: BigInt(v.shmid ?? 0),
        prot: v.prot ?? (PROT_READ | PROT_WRITE),
        flags: v.flags ?? (MAP_PRIVATE | MAP_ANONYMOUS),
        status: v.status ?? (VMA_AREA_REGULAR | VMA_ANON_PRIVATE),
        fd: -1n,
      })
    ),
  });
}

/** The records of a pagemap image: the head, then one per entry. */
export function pagemapRecords(
  entries: readonly SyntheticEntry[],
  options: { pagesId: number },
): [PagemapHead, ...PagemapEntry[]] {
  return [create(PagemapHeadSchema, options), ...entries.map(pagemapEntry)];
}

function pagemapEntry(e: SyntheticEntry): PagemapEntry {
  const m = create(PagemapEntrySchema, {
    vaddr: BigInt(e.vaddr),
    nrPages: e.nrPages64 ? 0 : e.nrPages,
  });
  if (e.inParent !== undefined) m.inParent = e.inParent;
  if (e.flags !== undefined) m.flags = e.flags;
  if (e.nrPages64) m.nrPages64 = BigInt(e.nrPages);
  return m;
}

function writePages(
  file: string,
  at: { entries: SyntheticEntry[]; spec: SyntheticDir },
): void {
  const tag = at.spec.tag ?? 0;
  const f = Deno.openSync(file, { write: true, create: true, truncate: true });
  try {
    let offset = 0;
    for (const e of at.entries) {
      if ((compatFlags(pagemapEntry(e)) & PE_PRESENT) === 0) continue;
      const stamped = at.spec.pages === "first" ? 1 : e.nrPages;
      for (let i = 0; i < stamped; i++) {
        f.seekSync(offset + i * PAGE_SIZE, Deno.SeekMode.Start);
        writeAll(f, stampPage(e.vaddr + i * PAGE_SIZE, tag));
      }
      offset += e.nrPages * PAGE_SIZE;
    }
    f.truncateSync(offset);
  } finally {
    f.close();
  }
}

function writeAll(f: Deno.FsFile, data: Uint8Array): void {
  for (let pos = 0; pos < data.length;) pos += f.writeSync(data.subarray(pos));
}
