/**
 * Lazy-range bookkeeping: which pages of a restored process the daemon still
 * has to deliver, where they are now and where they were at dump time.
 *
 * Pure and I/O-free. Addresses and lengths are plain numbers checked as safe
 * integers; nothing is ever truncated to 32 bits. Only {@linkcode carve}
 * modifies its argument (an array, in place); every other function returns
 * new arrays and no function modifies a {@linkcode LazyRange} object.
 *
 * @module
 */
export { type Interval, type LazyRange, PAGE_SIZE } from "./types.ts";
export {
  assertRangeList,
  copyRanges,
  countPages,
  findRange,
  mergeLists,
} from "./range.ts";
export { carve, dropInterval, moveInterval, type MoveOptions } from "./edit.ts";
export {
  type ChunkOptions,
  faultWindow,
  nextChunk,
  type WindowOptions,
} from "./pick.ts";
export {
  type CollectedRanges,
  collectLazyRanges,
  type PagemapEntryLike,
  type VmaLike,
} from "./collect.ts";
