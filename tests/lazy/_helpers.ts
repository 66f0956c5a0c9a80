/**
 * Shared shorthands of the lazy-range tests (not a test file itself).
 *
 * @module
 */
import { type LazyRange, PAGE_SIZE } from "../../src/lazy/mod.ts";

/** One page. */
export const P = PAGE_SIZE;
/** 2^30: ranges at and across large offsets check 64-bit-safe arithmetic. */
export const GiB = 1024 * 1024 * 1024;

/** A range; its image address is its address unless moved. */
export function r(start: number, end: number, image = start): LazyRange {
  return { start, end, image };
}
