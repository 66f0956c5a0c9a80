/**
 * Numbers fixed by CRIU's image format (images.md §1.1, §7, §8.1).
 *
 * @module
 */

/** Size of a page on x86_64; every page count in the images uses it. */
export const PAGE_SIZE = 4096;

/** Pagemap entry flag: the pages are in the parent image set. */
export const PE_PARENT = 1;
/** Pagemap entry flag: the restorer skips the pages, the daemon serves them. */
export const PE_LAZY = 2;
/** Pagemap entry flag: the contents are in this directory's pages file. */
export const PE_PRESENT = 4;

/** Head magic of every normal protobuf image (image-set version 2). */
export const IMG_COMMON_MAGIC = 0x54564319;
/** Head magic of service files (stats, irmap cache); never read here. */
export const IMG_SERVICE_MAGIC = 0x55105940;
/** Magic of `inventory.img` (which never has a head magic). */
export const INVENTORY_MAGIC = 0x58313116;
/** Magic of `pstree.img`. */
export const PSTREE_MAGIC = 0x50273030;
/** Magic of `mm-<pid>.img`. */
export const MM_MAGIC = 0x57492820;
/** Magic of `pagemap-<pid>.img` (and `pagemap-shmem-<id>.img`). */
export const PAGEMAP_MAGIC = 0x56084025;
/** Magic of `core-<pid>.img`. */
export const CORE_MAGIC = 0x55053847;
/** Magic of `ids-<pid>.img`. */
export const IDS_MAGIC = 0x54432030;

/** `img_version` of very old image sets: no head magic anywhere. */
export const IMG_VERSION_V1 = 1;
/** `img_version` of every modern image set: head magic on all but inventory. */
export const IMG_VERSION_V1_1 = 2;

/**
 * Largest protobuf image read into memory. Real ones are kilobytes; the cap
 * keeps a hostile or broken file from exhausting memory.
 */
export const MAX_IMAGE_BYTES = 256 * 1024 * 1024;

/** Deepest `parent` chain followed (CRIU has no limit; loops must end). */
export const MAX_PARENT_DEPTH = 64;

/** VMA status: ordinary mapping CRIU restores. */
export const VMA_AREA_REGULAR = 0x1;
/** VMA status: legacy stack marker. */
export const VMA_AREA_STACK = 0x2;
/** VMA status: the vsyscall page. */
export const VMA_AREA_VSYSCALL = 0x4;
/** VMA status: the vDSO. */
export const VMA_AREA_VDSO = 0x8;
/** VMA status: `[heap]`. */
export const VMA_AREA_HEAP = 0x20;
/** VMA status: private file mapping. */
export const VMA_FILE_PRIVATE = 0x40;
/** VMA status: shared file mapping. */
export const VMA_FILE_SHARED = 0x80;
/** VMA status: shared anonymous memory. */
export const VMA_ANON_SHARED = 0x100;
/** VMA status: private anonymous memory. */
export const VMA_ANON_PRIVATE = 0x200;
/** VMA status: SysV shm attachment. */
export const VMA_AREA_SYSVIPC = 0x400;
/** VMA status: socket mapping (packet rings). */
export const VMA_AREA_SOCKET = 0x800;
/** VMA status: vvar. */
export const VMA_AREA_VVAR = 0x1000;
/** VMA status: AIO ring. */
export const VMA_AREA_AIORING = 0x2000;
/** VMA status: memfd-backed. */
export const VMA_AREA_MEMFD = 0x4000;
/** VMA status: shadow stack (CRIU 4.0+). */
export const VMA_AREA_SHSTK = 0x8000;
/** VMA status: handled by a plugin. */
export const VMA_EXT_PLUGIN = 0x08000000;
/** VMA status: restore-time only. */
export const VMA_CLOSE = 0x10000000;
/** VMA status: restore-time only. */
export const VMA_NO_PROT_WRITE = 0x20000000;
/** VMA status: restore-time only. */
export const VMA_PREMMAPED = 0x40000000;
/** VMA status: must never appear in an image. */
export const VMA_UNSUPP = 0x80000000;

/** mmap flag (x86_64). */
export const MAP_SHARED = 0x1;
/** mmap flag (x86_64). */
export const MAP_PRIVATE = 0x2;
/** mmap flag (x86_64). */
export const MAP_ANONYMOUS = 0x20;
/** mmap flag (x86_64). */
export const MAP_GROWSDOWN = 0x100;
/** mmap flag (x86_64). */
export const MAP_LOCKED = 0x2000;
/** mmap flag (x86_64). */
export const MAP_NORESERVE = 0x4000;
/** mmap flag (x86_64). */
export const MAP_HUGETLB = 0x40000;

/** Page protection bit. */
export const PROT_READ = 0x1;
/** Page protection bit. */
export const PROT_WRITE = 0x2;
/** Page protection bit. */
export const PROT_EXEC = 0x4;
