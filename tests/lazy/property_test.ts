// Randomized checks of every operation against a naive model: a Map from
// unit number to image unit number, where a unit is one page or, to exercise
// lengths of 4 GiB and more, a larger page multiple. Deterministic: each
// scenario has a fixed seed, printed on failure; set LAZYD_SEED to run the
// scenarios with another seed.
import assert from "node:assert/strict";
import {
  assertRangeList,
  carve,
  collectLazyRanges,
  copyRanges,
  countPages,
  dropInterval,
  faultWindow,
  findRange,
  type Interval,
  type LazyRange,
  mergeLists,
  moveInterval,
  nextChunk,
} from "../../src/lazy/mod.ts";
import { GiB, P } from "./_helpers.ts";

const UNITS = 256; // size of the address space used, in units
const OPS = 1000; // operations per scenario

/**
 * Park–Miller generator. Plain multiplication and modulo (exact below 2^53),
 * so the test obeys the no-bitwise rule too.
 */
class Rng {
  #state: number;
  constructor(seed: number) {
    this.#state = (Math.abs(Math.floor(seed)) % 2147483646) + 1;
  }
  #next(): number {
    this.#state = (this.#state * 48271) % 2147483647;
    return this.#state - 1; // 0 .. 2^31 - 3
  }
  /** Uniform-ish integer in [0, n), n up to 2^53. */
  int(n: number): number {
    const x = (this.#next() * 2147483646 + this.#next()) / (2147483646 ** 2);
    return Math.floor(x * n);
  }
  chance(p: number): boolean {
    return this.int(1_000_000) < p * 1_000_000;
  }
}

interface Scenario {
  seed: number;
  base: number;
  unit: number;
}

const envSeed = (() => {
  const ok = Deno.permissions.querySync({ name: "env", variable: "LAZYD_SEED" })
    .state === "granted";
  const v = ok ? Deno.env.get("LAZYD_SEED") : undefined;
  return v === undefined ? undefined : Number(v);
})();

const SCENARIOS: Scenario[] = [
  { seed: 1, base: 0, unit: P },
  { seed: 2, base: 2 ** 47 - UNITS * P, unit: P },
  { seed: 3, base: 2 ** 52, unit: P },
  { seed: 4, base: 2 ** 47 - 2 ** 41, unit: 4 * GiB },
  { seed: 5, base: 2 ** 52 + 2 ** 44, unit: 4 * GiB + P },
].map((s, i) => envSeed === undefined ? s : { ...s, seed: envSeed + i });

type Model = Map<number, number>;

/** Naive collectLazyRanges over units: one piece per (entry, VMA, run). */
function naiveCollect(
  entries: { vaddr: number; nrPages: number; flags: number }[],
  vmas: Interval[],
  s: Scenario,
) {
  const ranges: LazyRange[] = [];
  const outside: Interval[] = [];
  let pages = 0;
  for (const e of entries) {
    if ((e.flags & 2) === 0) continue;
    pages += e.nrPages;
    const end = e.vaddr + e.nrPages * P;
    let prevVma = -2;
    for (let a = e.vaddr; a < end; a += s.unit) {
      const vma = vmas.findIndex((v) => v.start <= a && a < v.end);
      const list: Interval[] = vma < 0 ? outside : ranges;
      if (vma === prevVma) {
        const last = list[list.length - 1] as { end: number };
        last.end = a + s.unit;
      } else if (vma < 0) {
        outside.push({ start: a, end: a + s.unit });
      } else {
        ranges.push({ start: a, end: a + s.unit, image: a });
      }
      prevVma = vma;
    }
  }
  return { ranges, pages, outside };
}

function randomImage(rng: Rng, s: Scenario) {
  const entries: { vaddr: number; nrPages: number; flags: number }[] = [];
  for (let u = rng.int(4); u < UNITS;) {
    const len = 1 + rng.int(12);
    if (u + len > UNITS) break;
    entries.push({
      vaddr: s.base + u * s.unit,
      nrPages: (len * s.unit) / P,
      // Mostly lazy; every combination of the three flags appears.
      flags: rng.chance(0.6) ? 2 + 4 * rng.int(2) + rng.int(2) : rng.int(8),
    });
    u += len + rng.int(3);
  }
  const vmas: Interval[] = [];
  for (let u = rng.int(3); u < UNITS;) {
    const len = 1 + rng.int(30);
    if (u + len > UNITS) break;
    vmas.push({ start: s.base + u * s.unit, end: s.base + (u + len) * s.unit });
    u += len + (rng.chance(0.5) ? 0 : rng.int(4));
  }
  return { entries, vmas };
}

function toModel(list: readonly LazyRange[], s: Scenario): Model {
  const m: Model = new Map();
  for (const r of list) {
    for (const x of [r.start, r.end, r.image]) {
      assert.equal((x - s.base) % s.unit, 0, "range not unit aligned");
    }
    for (let a = r.start; a < r.end; a += s.unit) {
      const u = (a - s.base) / s.unit;
      assert.ok(!m.has(u), "overlap");
      m.set(u, (r.image + (a - r.start) - s.base) / s.unit);
    }
  }
  return m;
}

function checkList(list: readonly LazyRange[], model: Model, s: Scenario) {
  assertRangeList(list);
  assert.deepStrictEqual(toModel(list, s), model);
  assert.equal(countPages(list), (model.size * s.unit) / P);
}

/** Every removed piece lies in one range of `before`, with its image. */
function checkPieces(
  pieces: readonly LazyRange[],
  before: readonly LazyRange[],
  iv: Interval,
) {
  assertRangeList(pieces);
  for (const p of pieces) {
    assert.ok(p.start >= iv.start && p.end <= iv.end, "piece outside interval");
    const i = findRange(before, p.start);
    assert.ok(i >= 0 && p.end <= before[i].end, "piece spans ranges");
    assert.equal(p.image, before[i].image + (p.start - before[i].start));
  }
}

/** Ranges only ever shrink or move; they never join (images stay in one original range). */
function checkNeverJoined(list: readonly LazyRange[], original: LazyRange[]) {
  for (const r of list) {
    const i = findRange(original, r.image);
    assert.ok(i >= 0, "image address not in the original ranges");
    assert.ok(r.image + (r.end - r.start) <= original[i].end, "ranges joined");
  }
}

function linearFind(list: readonly LazyRange[], addr: number): number {
  return list.findIndex((r) => r.start <= addr && addr < r.end);
}

function cut(r: LazyRange, start: number, end: number): LazyRange {
  return { start, end, image: r.image + (start - r.start) };
}

function run(s: Scenario) {
  const rng = new Rng(s.seed);
  const span = UNITS * s.unit;
  const unitAddr = (u: number) => s.base + u * s.unit;
  const aligned = (r: Interval) =>
    (r.start - s.base) % s.unit === 0 && (r.end - s.base) % s.unit === 0;
  const randomInterval = (): Interval => {
    const a = rng.int(UNITS + 1);
    const b = rng.chance(0.1) ? a : a + rng.int(Math.min(16, UNITS + 1 - a));
    return { start: unitAddr(a), end: unitAddr(b) };
  };

  let original: LazyRange[] = [];
  let list: LazyRange[] = [];
  let model: Model = new Map();

  for (let op = 0; op < OPS; op++) {
    let kind = rng.int(8);
    let what = `op ${op} kind ${kind}`;
    try {
      if (model.size < 8) {
        // Start over with a fresh image so most operations see a busy list.
        what = `op ${op} new image`;
        kind = -1;
        const { entries, vmas } = randomImage(rng, s);
        const collected = collectLazyRanges(entries, vmas);
        assert.deepStrictEqual(collected, naiveCollect(entries, vmas, s));
        original = copyRanges(collected.ranges);
        list = collected.ranges;
        model = toModel(list, s);
      }
      const before = list.slice();
      const snapshot = copyRanges(list);
      if (kind === -1) {
        // checked above
      } else if (kind === 0) {
        // carve (fault / request bookkeeping)
        const iv = randomInterval();
        what += ` carve [${iv.start}, ${iv.end})`;
        const removed = carve(list, { start: iv.start, end: iv.end });
        checkPieces(removed, before, iv);
        const gone = toModel(removed, s);
        for (const [u, img] of model) {
          const inside = unitAddr(u) >= iv.start && unitAddr(u) < iv.end;
          assert.equal(gone.get(u), inside ? img : undefined);
          if (inside) model.delete(u);
        }
      } else if (kind === 1) {
        // dropInterval (UNMAP / REMOVE)
        const iv = randomInterval();
        what += ` drop [${iv.start}, ${iv.end})`;
        list = dropInterval(list, { start: iv.start, end: iv.end });
        assert.deepStrictEqual(before, snapshot, "input modified");
        for (const u of [...model.keys()]) {
          if (unitAddr(u) >= iv.start && unitAddr(u) < iv.end) model.delete(u);
        }
      } else if (kind === 2) {
        // moveInterval (REMAP)
        const len = rng.int(40);
        const from = rng.int(UNITS - len + 1);
        const to = rng.chance(0.8)
          ? rng.int(UNITS - len + 1)
          : Math.min(UNITS - len, Math.max(0, from + rng.int(9) - 4));
        what += ` move ${from} -> ${to} len ${len} units`;
        list = moveInterval(list, {
          from: unitAddr(from),
          to: unitAddr(to),
          len: len * s.unit,
        });
        assert.deepStrictEqual(before, snapshot, "input modified");
        if (from !== to) {
          const moved: [number, number][] = [];
          for (const [u, img] of model) {
            if (u >= from && u < from + len) moved.push([u - from + to, img]);
          }
          for (const u of [...model.keys()]) {
            if ((u >= from && u < from + len) || (u >= to && u < to + len)) {
              model.delete(u);
            }
          }
          for (const [u, img] of moved) model.set(u, img);
        }
      } else if (kind === 3) {
        // faultWindow, then take it like the daemon would
        const addr = s.base + rng.int(span);
        const opts = {
          before: rng.int(5) * (rng.chance(0.5) ? P : s.unit),
          after: (1 + rng.int(5)) * (rng.chance(0.5) ? P : s.unit),
        };
        what += ` faultWindow ${addr} ${JSON.stringify(opts)}`;
        const w = faultWindow(list, addr, opts);
        const page = addr - (addr % P);
        const i = linearFind(list, page);
        assert.deepStrictEqual(
          w,
          i < 0 ? undefined : cut(
            list[i],
            Math.max(list[i].start, page - opts.before),
            Math.min(list[i].end, page + opts.after),
          ),
        );
        assert.deepStrictEqual(list, snapshot, "input modified");
        if (w !== undefined && aligned(w) && rng.chance(0.7)) {
          assert.deepStrictEqual(carve(list, { start: w.start, end: w.end }), [
            w,
          ]);
          for (let a = w.start; a < w.end; a += s.unit) {
            model.delete((a - s.base) / s.unit);
          }
        }
      } else if (kind === 4) {
        // nextChunk, then take it like the background pass would
        const after = rng.chance(0.3) ? 0 : s.base + rng.int(span / P) * P;
        const maxBytes = (1 + rng.int(20)) * (rng.chance(0.5) ? P : s.unit);
        what += ` nextChunk after ${after} max ${maxBytes}`;
        const c = nextChunk(list, { maxBytes, after });
        let i = list.findIndex((r) => r.end > after);
        let start = i < 0 ? 0 : Math.max(list[i].start, after);
        if (i < 0 && list.length > 0) [i, start] = [0, list[0].start];
        assert.deepStrictEqual(
          c,
          i < 0
            ? undefined
            : cut(list[i], start, Math.min(list[i].end, start + maxBytes)),
        );
        assert.deepStrictEqual(list, snapshot, "input modified");
        if (c !== undefined && aligned(c) && rng.chance(0.7)) {
          assert.deepStrictEqual(carve(list, { start: c.start, end: c.end }), [
            c,
          ]);
          for (let a = c.start; a < c.end; a += s.unit) {
            model.delete((a - s.base) / s.unit);
          }
        }
      } else if (kind === 5) {
        const addr = s.base + rng.int(span);
        what += ` findRange ${addr}`;
        assert.equal(findRange(list, addr), linearFind(list, addr));
      } else if (kind === 6) {
        // fork: remaining + in-flight give back the whole list
        const iv = randomInterval();
        what += ` fork with in-flight [${iv.start}, ${iv.end})`;
        const rest = copyRanges(list);
        const inFlight = carve(rest, { start: iv.start, end: iv.end });
        const child = mergeLists(rest, inFlight);
        assertRangeList(child);
        assert.deepStrictEqual(toModel(child, s), model);
        if (inFlight.length > 0) {
          assert.throws(() => mergeLists(list, inFlight), RangeError);
        }
      } else {
        // invalid arguments leave the list alone
        what += " bad arguments";
        assert.throws(
          () => carve(list, { start: s.base + 1, end: s.base + P }),
          RangeError,
        );
        assert.throws(
          () => moveInterval(list, { from: s.base, to: s.base, len: 1 }),
          RangeError,
        );
        assert.deepStrictEqual(list, snapshot);
      }
      checkList(list, model, s);
      checkNeverJoined(list, original);
    } catch (e) {
      throw new Error(
        `property test failed: seed ${s.seed} (base ${s.base}, unit ${s.unit}), ${what}: ${
          (e as Error).message
        }`,
        { cause: e },
      );
    }
  }
}

for (const s of SCENARIOS) {
  Deno.test(
    `random operations match the model (seed ${s.seed}, base 2^${
      Math.log2(s.base || 1).toFixed(1)
    }, unit ${s.unit / P} pages)`,
    () => run(s),
  );
}

Deno.test("collectLazyRanges matches the naive model on random images", () => {
  for (let seed = 100; seed < 400; seed++) {
    const s = SCENARIOS[seed % SCENARIOS.length];
    const rng = new Rng(seed);
    const { entries, vmas } = randomImage(rng, s);
    try {
      assert.deepStrictEqual(
        collectLazyRanges(entries, vmas),
        naiveCollect(entries, vmas, s),
      );
    } catch (e) {
      throw new Error(
        `collect failed for seed ${seed}: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
  }
});
