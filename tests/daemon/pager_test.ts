/**
 * The paging policy against a real userfaultfd on this test's own memory:
 * a region registered in MISSING mode stands for a restored process's
 * lazy VMA, a synthetic image directory for its pages. The pages come from
 * a LocalSource (answers at once) or, for requests in flight, from a
 * source that answers when the test says (as a page server does), reading
 * the same images.
 *
 * Rule of these tests: the test thread never touches a registered page
 * the pager has not filled (that would block it for ever). Pages are only
 * read after a copy (or a zero page) made them present, or after their
 * range was unregistered; a fault from another thread is taken by a
 * worker (tests/ffi/fault_worker.ts), and the uffd is closed before the
 * memory is freed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  allocPages,
  E,
  Epoll,
  EPOLLIN,
  PAGE_SIZE,
  type PageBuffer,
  readMessages,
  UFFD_FEATURE,
  uffdApi,
  uffdCopy,
  uffdRegister,
  uffdZeropage,
} from "../../ffi/mod.ts";
import { Logger } from "../../src/daemon/log.ts";
import { type Outcome, Pager, type Pending } from "../../src/daemon/pager.ts";
import { makePlan } from "../../src/daemon/plan.ts";
import { LazyProcess } from "../../src/daemon/process.ts";
import {
  ImageDir,
  PE_LAZY,
  PE_PRESENT,
  readStamp,
  writeImageDir,
} from "../../src/images/mod.ts";
import { countPages, type LazyRange } from "../../src/lazy/mod.ts";
import {
  type Chunk,
  type Fetch,
  LocalSource,
  type PageSource,
  type SourceStats,
} from "../../src/source/mod.ts";
import { FaultThread } from "../ffi/helpers.ts";
import { closeAll, newUffd } from "./_helpers.ts";

const P = PAGE_SIZE;
/** Dump-time address of the synthetic process's lazy VMA (not ours). */
const IMG = 0x55550000000;
/** Pages of that VMA, all PE_LAZY with data. */
const IMG_PAGES = 64;
const PID = 7;
const TAG = 0xa5a5;

interface Fixture {
  fd: number;
  /** The registered memory (the first `registered` pages of it). */
  region: PageBuffer;
  dir: string;
  images: ImageDir;
  source: LocalSource;
  pager: Pager;
  logFile: string;
  /** Current address of page `i` of the region. */
  at(i: number): number;
  /** Lazy range over region pages [from, to), image page `image` on. */
  range(from: number, to: number, image?: number): LazyRange;
  process(lazy: LazyRange[]): LazyProcess;
  /** Page `i` of the region; only for pages known to be present. */
  page(i: number): Uint8Array;
  /** Asserts that region page `i` holds image page `image`. */
  holds(i: number, image: number): void;
}

interface FixtureOptions {
  pages?: number;
  /** Pages registered from the start of the region (default all). */
  registered?: number;
  faultWindow?: number;
  backgroundChunk?: number;
  features?: number;
}

async function withFixture(
  options: FixtureOptions,
  fn: (f: Fixture) => void | Promise<void>,
): Promise<void> {
  const pages = options.pages ?? 16;
  const tmp = Deno.makeTempDirSync({ prefix: "lazyd-pager-" });
  const dir = join(tmp, "images");
  writeImageDir(dir, {
    tag: TAG,
    processes: [{
      pid: PID,
      vmas: [{ start: IMG, end: IMG + IMG_PAGES * P }],
      pagemap: [{
        vaddr: IMG,
        nrPages: IMG_PAGES,
        flags: PE_LAZY | PE_PRESENT,
      }],
    }],
  });
  const images = ImageDir.open(dir);
  // The plan reads the sizes of the pages files, as the daemon does first.
  const plan = makePlan(images, { local: true });
  assert.equal(plan.processes.get(PID)!.lazyPages, IMG_PAGES);
  const source = new LocalSource(images);
  const logFile = join(tmp, "pager.log");
  const pager = new Pager(source, new Logger({ file: logFile, level: 4 }), {
    faultWindow: options.faultWindow ?? 4 * P,
    backgroundChunk: options.backgroundChunk ?? 3 * P,
  });
  const fd = newUffd();
  const region = allocPages(pages * P);
  try {
    uffdApi(fd, { features: options.features ?? 0 });
    uffdRegister(fd, {
      start: region.address,
      len: (options.registered ?? pages) * P,
    });
    const at = (i: number) => region.address + i * P;
    const page = (i: number) => region.bytes.subarray(i * P, (i + 1) * P);
    await fn({
      fd,
      region,
      dir,
      images,
      source,
      pager,
      logFile,
      at,
      range: (from, to, image = from) => ({
        start: at(from),
        end: at(to),
        image: IMG + image * P,
      }),
      process: (lazy) =>
        new LazyProcess({
          imagePid: PID,
          uffd: fd,
          lazy,
          totalPages: countPages(lazy),
          label: `${PID}-${fd}`,
        }),
      page,
      holds: (i, image) =>
        assert.deepEqual(
          readStamp(page(i)),
          { addr: IMG + image * P, tag: TAG },
          `region page ${i} holds image page ${image}`,
        ),
    });
  } finally {
    // Closing the uffd first: nothing can block on the region any more.
    closeAll(fd);
    region.free();
    source.close();
    Deno.removeSync(tmp, { recursive: true });
  }
}

/** Every lazy page as "current->image" (ranges may be split differently). */
function pagesOf(list: readonly LazyRange[]): string[] {
  const out: string[] = [];
  for (const r of list) {
    for (let a = r.start; a < r.end; a += P) {
      out.push(`${a.toString(16)}->${(r.image + a - r.start).toString(16)}`);
    }
  }
  return out;
}

/** Every page `p` is still owed: lazy, or in a request on its way. */
function owed(p: LazyProcess): string[] {
  return pagesOf([...p.lazy, ...p.inflight.flatMap((r) => r.pieces)]).sort();
}

function isZero(page: Uint8Array): boolean {
  return page.every((b) => b === 0);
}

Deno.test("pager: a fault copies a window from the faulting page, within its lazy range", async () => {
  await withFixture({ faultWindow: 4 * P }, (f) => {
    // Lazy: pages 0..7 and 10..13; 8, 9, 14, 15 are not lazy.
    const p = f.process([f.range(0, 8), f.range(10, 14)]);
    assert.equal(p.counters.totalPages, 12);

    // A fault in page 1 (any byte of it) brings pages 1..4.
    assert.equal(f.pager.fault(p, f.at(1) + 123), "done");
    for (const i of [1, 2, 3, 4]) f.holds(i, i);
    assert.deepEqual(p.lazy, [f.range(0, 1), f.range(5, 8), f.range(10, 14)]);
    assert.equal(p.counters.faults, 1);
    assert.equal(p.counters.copiedPages, 4);
    assert.equal(p.counters.backgroundPages, 0);
    assert.deepEqual(p.inflight, [], "local reads complete at once");
    assert.equal(p.cursor, f.at(5), "background goes on after the window");

    // The window stops at the end of the range: pages 6, 7 only.
    assert.equal(f.pager.fault(p, f.at(6)), "done");
    f.holds(6, 6);
    f.holds(7, 7);
    assert.deepEqual(p.lazy, [f.range(0, 1), f.range(5, 6), f.range(10, 14)]);
    assert.equal(p.counters.copiedPages, 6);
    assert.equal(p.cursor, f.at(8));

    // Outside every lazy range: a zero page, nothing copied.
    assert.equal(f.pager.fault(p, f.at(8) + 4095), "done");
    assert.ok(isZero(f.page(8)));
    assert.equal(p.counters.zeroPages, 1);
    assert.equal(p.counters.copiedPages, 6);

    // A fault on a page that is already there (another thread faulted on
    // it too): the zero page is refused with EEXIST, the data stays.
    assert.equal(f.pager.fault(p, f.at(2)), "done");
    f.holds(2, 2);
    assert.equal(p.counters.zeroPages, 1);
    assert.equal(p.counters.faults, 4);
    assert.equal(p.counters.presentPages, 0);
    assert.equal(p.reason, undefined);
  });
});

Deno.test("pager: background chunks continue after the last fault, wrap around, then stop", async () => {
  await withFixture({ faultWindow: 2 * P, backgroundChunk: 3 * P }, (f) => {
    // Image addresses differ from current ones: pages 10..15 hold image
    // pages 20..25.
    const p = f.process([f.range(0, 4), f.range(10, 16, 20)]);
    assert.equal(f.pager.fault(p, f.at(11)), "done"); // 11, 12
    assert.equal(p.cursor, f.at(13));

    const steps: LazyRange[][] = [];
    for (let n = 0; n < 10 && p.lazy.length > 0; n++) {
      assert.equal(f.pager.background(p), "done");
      steps.push(p.lazy.map((r) => ({ ...r })));
    }
    assert.deepEqual(steps, [
      // 13..15 after the fault window
      [f.range(0, 4), f.range(10, 11, 20)],
      // nothing above 16: wrap to the lowest range, 3 pages at most
      [f.range(3, 4), f.range(10, 11, 20)],
      [f.range(10, 11, 20)],
      [],
    ]);
    assert.equal(f.pager.background(p), "done", "nothing left: nothing sent");
    assert.equal(p.counters.copiedPages, 10);
    assert.equal(p.counters.copiedPages, p.counters.totalPages);
    assert.equal(p.counters.backgroundPages, 8);
    assert.equal(p.counters.faults, 1);
    for (const i of [0, 1, 2, 3]) f.holds(i, i);
    for (const i of [10, 11, 12, 13, 14, 15]) f.holds(i, i + 10);
    assert.match(Deno.readTextFileSync(f.logFile), /#PF at 0x[0-9a-f]+/);
    assert.match(Deno.readTextFileSync(f.logFile), /uffd_copy: 0x[0-9a-f]+\//);
  });
});

Deno.test("pager: pages already present (EEXIST) are counted and skipped, the rest delivered", async () => {
  await withFixture({ faultWindow: 8 * P, backgroundChunk: 8 * P }, (f) => {
    const p = f.process([f.range(0, 8), f.range(8, 12)]);
    // Page 3 gets the zero page and page 5 our own data before the pager
    // sees them, as after a racing fault or a write after REMOVE.
    const mine = allocPages(P);
    try {
      mine.bytes.fill(0xee);
      assert.equal(uffdZeropage(f.fd, { start: f.at(3), len: P }).error, 0);
      assert.equal(
        uffdCopy(f.fd, { dst: f.at(5), src: mine.address, len: P }).error,
        0,
      );
      // Page 8 is present and first in its range.
      assert.equal(uffdZeropage(f.fd, { start: f.at(8), len: P }).error, 0);
    } finally {
      mine.free();
    }

    assert.equal(f.pager.fault(p, f.at(0)), "done");
    for (const i of [0, 1, 2, 4, 6, 7]) f.holds(i, i);
    assert.ok(isZero(f.page(3)), "the present zero page is left alone");
    assert.ok(f.page(5).every((b) => b === 0xee), "present data is kept");
    assert.equal(p.counters.copiedPages, 6);
    assert.equal(p.counters.presentPages, 2);
    assert.deepEqual(p.lazy, [f.range(8, 12)]);

    assert.equal(f.pager.background(p), "done");
    assert.ok(isZero(f.page(8)));
    for (const i of [9, 10, 11]) f.holds(i, i);
    assert.equal(p.counters.copiedPages, 9);
    assert.equal(p.counters.backgroundPages, 3);
    assert.equal(p.counters.presentPages, 3);
    assert.deepEqual(p.lazy, []);
  });
});

Deno.test("pager: a lazy range past the registered area fails naming the first unregistered page", async () => {
  // 12 pages mapped, 8 registered: the registration splits the mapping,
  // so a copy over pages 6..9 spans two VMAs (ENOENT), as after an
  // mprotect split.
  await withFixture({ pages: 12, registered: 8, faultWindow: 4 * P }, (f) => {
    const p = f.process([f.range(6, 10)]);
    assert.equal(f.pager.fault(p, f.at(6)), "failed");
    // Single pages found the seam: 6 and 7 are delivered.
    f.holds(6, 6);
    f.holds(7, 7);
    assert.equal(p.counters.copiedPages, 2);
    assert.match(
      p.reason ?? "",
      new RegExp(
        `^0x${
          f.at(8).toString(16)
        } is lazy but not registered with its userfaultfd \\(ENOENT\\)`,
      ),
    );
    assert.equal(p.end, undefined, "the runtime decides what happens to it");
  });
});

Deno.test("pager: a fault outside every registered area is answered by waking it", async () => {
  await withFixture({ pages: 4, registered: 2 }, (f) => {
    const p = f.process([f.range(0, 2)]);
    // Page 3 is not registered (unmapped or removed after the fault was
    // queued): ZEROPAGE says ENOENT; the pager wakes the page and is done.
    assert.equal(f.pager.fault(p, f.at(3)), "done");
    assert.equal(p.counters.zeroPages, 0);
    assert.equal(p.reason, undefined);
    assert.ok(isZero(f.page(3)), "ordinary memory");
  });
});

Deno.test("pager: a source error fails the process (pages file truncated after the plan)", async () => {
  await withFixture({ faultWindow: 4 * P }, (f) => {
    const p = f.process([f.range(0, 8)]);
    assert.equal(f.pager.fault(p, f.at(0)), "done");
    // The plan checked the file; now it loses everything after page 5.
    Deno.truncateSync(join(f.dir, "pages-1.img"), 5 * P);
    const outcome = f.pager.fault(p, f.at(4));
    assert.equal(outcome, "failed");
    assert.match(
      p.reason ?? "",
      new RegExp(
        `^cannot read 4 pages at image address 0x${
          (IMG + 4 * P).toString(16)
        }: .*pages-1\\.img: byte ${5 * P}: pages file too short`,
      ),
    );
    assert.equal(p.counters.copiedPages, 4, "nothing of the window copied");
    assert.deepEqual(owed(p), pagesOf([f.range(4, 8)]), "nothing lost");
    // Background fails the same way.
    const q = f.process([f.range(8, 12)]);
    assert.equal(f.pager.background(q), "failed");
    assert.match(q.reason ?? "", /pages file too short/);
    assert.equal(q.counters.copiedPages, 0);
  });
});

/** Whether the CPU can run 5-level paging (user addresses up to 2^56). */
function la57(): boolean {
  try {
    return /^flags\s*:.*\bla57\b/m.test(Deno.readTextFileSync("/proc/cpuinfo"));
  } catch {
    return true; // unknown: do not insist on EINVAL
  }
}

Deno.test("pager: other kernel errors fail with the ioctl and errno named", async () => {
  // An address above every user address of 4-level paging (2^47), where
  // COPY and ZEROPAGE fail argument validation with EINVAL. (With 5-level
  // paging it is a valid but unmapped address: ENOENT instead.)
  const high = 2 ** 52;
  const eNoEnt = la57();
  await withFixture({}, (f) => {
    const p = f.process([{ start: high, end: high + 2 * P, image: IMG }]);
    assert.equal(f.pager.background(p), "failed");
    assert.equal(p.counters.copiedPages, 0);
    if (eNoEnt && /ENOENT/.test(p.reason ?? "")) return;
    assert.match(
      p.reason ?? "",
      /^UFFDIO_COPY of 8192 bytes at 0x10000000000000: EINVAL$/,
    );
    // Nothing is lost from the bookkeeping.
    assert.deepEqual(
      owed(p),
      pagesOf([{ start: high, end: high + 2 * P, image: IMG }]),
    );

    const q = f.process([]);
    assert.equal(f.pager.fault(q, high), "failed");
    assert.match(
      q.reason ?? "",
      /^UFFDIO_ZEROPAGE at 0x10000000000000: EINVAL$/,
    );
    assert.equal(q.counters.zeroPages, 0);
  });
});

Deno.test("pager: remap moves lazy ranges; their image addresses stay", async () => {
  await withFixture({ pages: 16, faultWindow: 2 * P }, (f) => {
    // Lazy: region pages 0..8 (image 0..8). The process moves pages 2..6
    // to pages 10..14 of the region (a REMAP event).
    const p = f.process([f.range(0, 8)]);
    f.pager.remap(p, { from: f.at(2), to: f.at(10), len: 4 * P });
    assert.deepEqual(p.lazy, [
      f.range(0, 2),
      f.range(6, 8, 6),
      f.range(10, 14, 2),
    ]);
    assert.equal(countPages(p.lazy), 8);
    assert.equal(f.pager.fault(p, f.at(11)), "done");
    f.holds(11, 3);
    f.holds(12, 4);
    while (p.lazy.length > 0) assert.equal(f.pager.background(p), "done");
    for (const i of [0, 1, 6, 7]) f.holds(i, i);
    f.holds(10, 2);
    f.holds(13, 5);
    assert.equal(p.counters.copiedPages, 8);
    assert.equal(p.counters.droppedPages, 0);
    assert.match(Deno.readTextFileSync(f.logFile), /REMAP: 0x[0-9a-f]+ -> /);
  });
});

Deno.test("pager: unmap drops pages from the bookkeeping", async () => {
  await withFixture({ pages: 8 }, (f) => {
    const p = f.process([f.range(0, 4), f.range(5, 8)]);
    f.pager.unmap(p, { start: f.at(1), end: f.at(6) });
    assert.deepEqual(p.lazy, [f.range(0, 1), f.range(6, 8)]);
    assert.equal(p.counters.droppedPages, 4);
    // Unmapping what is not lazy drops nothing.
    f.pager.unmap(p, { start: f.at(2), end: f.at(5) });
    assert.equal(p.counters.droppedPages, 4);
    while (p.lazy.length > 0) assert.equal(f.pager.background(p), "done");
    assert.equal(p.counters.copiedPages, 3);
    for (const i of [0, 6, 7]) f.holds(i, i);
    assert.match(
      Deno.readTextFileSync(f.logFile),
      /UNMAP: 0x[0-9a-f]+\(20480\)/,
    );
  });
});

Deno.test("pager: remove drops pages and unregisters the range", async () => {
  await withFixture({ pages: 8 }, (f) => {
    const p = f.process([f.range(0, 8)]);
    assert.equal(f.pager.remove(p, { start: f.at(2), end: f.at(4) }), "done");
    assert.deepEqual(p.lazy, [f.range(0, 2), f.range(4, 8)]);
    assert.equal(p.counters.droppedPages, 2);
    // UFFDIO_UNREGISTER happened: the kernel no longer knows the range...
    assert.equal(
      uffdZeropage(f.fd, { start: f.at(2), len: P }).error,
      E.ENOENT,
    );
    assert.equal(
      uffdZeropage(f.fd, { start: f.at(3), len: P }).error,
      E.ENOENT,
    );
    // ...so touching it is an ordinary zero-fill fault (safe from here).
    assert.ok(isZero(f.page(2)));
    assert.ok(isZero(f.page(3)));
    // The neighbours are still registered and still the pager's.
    while (p.lazy.length > 0) assert.equal(f.pager.background(p), "done");
    for (const i of [0, 1, 4, 5, 6, 7]) f.holds(i, i);
    assert.equal(p.counters.copiedPages, 6);

    // A range that is no longer registered (removed twice, or unmapped
    // meanwhile): the unregister error is not a failure.
    assert.equal(f.pager.remove(p, { start: f.at(2), end: f.at(4) }), "done");
    assert.equal(p.counters.droppedPages, 2);
    assert.match(
      Deno.readTextFileSync(f.logFile),
      /REMOVE: 0x[0-9a-f]+\(8192\)/,
    );
  });
});

Deno.test("pager: fork gives the child its own uffd and a copy of what is left", async () => {
  await withFixture({}, (f) => {
    const parent = f.process([f.range(0, 4), f.range(8, 12)]);
    assert.equal(f.pager.fault(parent, f.at(0)), "done");
    const child = f.pager.fork(parent, 987);
    assert.equal(child.imagePid, PID);
    assert.equal(child.uffd, 987);
    assert.equal(child.label, `${PID}-987`);
    assert.deepEqual(child.lazy, [f.range(8, 12)]);
    assert.notEqual(child.lazy, parent.lazy);
    assert.equal(child.counters.totalPages, 4);
    assert.equal(child.counters.copiedPages, 0);
    assert.equal(child.cursor, parent.cursor);
    assert.equal(child.hostPid, undefined);
    assert.ok(child.active);
    // The two lists are independent.
    f.pager.unmap(child, { start: f.at(8), end: f.at(12) });
    assert.deepEqual(parent.lazy, [f.range(8, 12)]);
  });
});

Deno.test("pager: a fault from another thread, and EAGAIN (retry) while a REMOVE event is pending", async () => {
  await withFixture(
    { pages: 8, faultWindow: 2 * P, features: UFFD_FEATURE.EVENT_REMOVE },
    async (f) => {
      const ep = new Epoll();
      const worker = new FaultThread({ timeoutMs: 10_000 });
      const next = () => {
        assert.deepEqual(ep.wait(10_000), [{ token: 1, events: EPOLLIN }]);
        return readMessages(f.fd);
      };
      try {
        ep.add(f.fd, { events: EPOLLIN, token: 1 });
        const p = f.process([f.range(0, 8)]);

        // The worker reads byte 8 of page 5 (the low byte of the tag) and
        // blocks; the pager answers the message like the daemon does.
        let reply = worker.run({ op: "read", address: f.at(5) + 8 });
        const [m] = next();
        assert.equal(m.kind, "pagefault");
        assert.ok(m.kind === "pagefault");
        assert.equal(m.address, f.at(5));
        assert.equal(f.pager.fault(p, m.address), "done");
        assert.equal(await reply, TAG & 0xff);
        f.holds(5, 5);
        f.holds(6, 6);

        // madvise(DONTNEED) on page 7: the worker blocks until the REMOVE
        // event is read, and meanwhile every copy fails with EAGAIN.
        reply = worker.run({ op: "madvise", address: f.at(7), len: P });
        assert.deepEqual(ep.wait(10_000), [{ token: 1, events: EPOLLIN }]);
        const before = owed(p);
        const outcome: Outcome = f.pager.fault(p, f.at(1));
        assert.equal(outcome, "retry");
        assert.deepEqual(owed(p), before, "nothing lost from the bookkeeping");
        assert.deepEqual(p.inflight, []);
        assert.equal(p.counters.copiedPages, 2);
        assert.equal(f.pager.background(p), "retry");
        assert.deepEqual(owed(p), before);
        assert.deepEqual(p.inflight, []);

        const [r] = readMessages(f.fd);
        assert.deepEqual(r, { kind: "remove", start: f.at(7), end: f.at(8) });
        assert.equal(
          f.pager.remove(p, r as { start: number; end: number }),
          "done",
        );
        assert.equal(await reply, 0);
        assert.equal(p.counters.droppedPages, 1);

        // Event read: the retried fault goes through.
        assert.equal(f.pager.fault(p, f.at(1)), "done");
        f.holds(1, 1);
        f.holds(2, 2);
        while (p.lazy.length > 0) assert.equal(f.pager.background(p), "done");
        for (const i of [0, 3, 4]) f.holds(i, i);
        assert.equal(p.counters.copiedPages, 7);
        assert.equal(p.counters.faults, 3);
        assert.ok(isZero(f.page(7)), "removed and unregistered: zeros");
        assert.deepEqual(readMessages(f.fd), []);
      } finally {
        closeAll(f.fd); // releases a worker still blocked
        ep.close();
        worker.terminate();
      }
    },
  );
});

/**
 * A source that answers later, like a page server: `fetch` queues, the
 * test decides when (and how much of) each request arrives. The data is
 * read from the local images into a buffer of its own per reply.
 */
class LaterSource implements PageSource<Pending> {
  readonly kind = "later";
  readonly queue: { request: Fetch; tag: Pending }[] = [];
  released = 0;
  readonly #local: LocalSource;

  constructor(local: LocalSource) {
    this.#local = local;
  }

  fetch(request: Fetch, tag: Pending): Chunk | undefined {
    this.queue.push({ request, tag });
    return undefined;
  }

  canFetch(): boolean {
    return true;
  }

  /** The oldest request's reply, cut to `pages` pages if given. */
  answer(pages?: number): { pending: Pending; chunk: Chunk } {
    const next = this.queue.shift();
    assert.ok(next, "a request is waiting");
    const len = pages === undefined ? next.request.len : pages * P;
    const buf = allocPages(len);
    this.#local.read(next.request.pid, {
      image: next.request.image,
      into: buf.bytes,
    });
    return {
      pending: next.tag,
      chunk: {
        address: buf.address,
        bytes: buf.bytes,
        release: () => {
          this.released++;
          buf.free();
        },
      },
    };
  }

  stats(): SourceStats {
    return this.#local.stats();
  }

  close(): void {}
}

/** A pager over a {@linkcode LaterSource} of the fixture's images. */
function laterPager(f: Fixture, faultWindow = 2 * P) {
  const source = new LaterSource(f.source);
  const log = new Logger({ file: f.logFile, level: 4 });
  const pager = new Pager(source, log, {
    faultWindow,
    backgroundChunk: 4 * P,
  });
  return { source, pager };
}

Deno.test("pager, answering later: requests stay in flight until complete()", async () => {
  await withFixture({ pages: 16 }, (f) => {
    const { source, pager } = laterPager(f);
    const p = f.process([f.range(0, 8), f.range(10, 14)]);
    assert.equal(pager.fault(p, f.at(2)), "done");
    assert.equal(source.queue.length, 1);
    assert.deepEqual(source.queue[0].request, {
      pid: PID,
      image: IMG + 2 * P,
      len: 2 * P,
      urgent: true,
    });
    assert.deepEqual(p.lazy, [f.range(0, 2), f.range(4, 8), f.range(10, 14)]);
    assert.deepEqual(p.inflight.map((r) => r.pieces), [[f.range(2, 4)]]);
    assert.equal(p.drained, false);
    assert.equal(p.counters.copiedPages, 0);

    // Another fault on a page that is on its way asks for nothing: the
    // copy will wake every thread waiting there.
    assert.equal(pager.fault(p, f.at(3) + 17), "done");
    assert.equal(source.queue.length, 1);
    assert.equal(p.counters.faults, 2);
    assert.equal(p.counters.zeroPages, 0);

    // A background chunk goes out meanwhile (not urgent).
    assert.equal(pager.background(p), "done");
    assert.deepEqual(source.queue[1].request, {
      pid: PID,
      image: IMG + 4 * P,
      len: 4 * P,
      urgent: false,
    });

    const first = source.answer();
    assert.equal(pager.complete(first.pending, first.chunk), "done");
    f.holds(2, 2);
    f.holds(3, 3);
    const second = source.answer();
    assert.equal(pager.complete(second.pending, second.chunk), "done");
    for (const i of [4, 5, 6, 7]) f.holds(i, i);
    assert.equal(source.released, 2, "every chunk is released");
    assert.deepEqual(p.inflight, []);
    assert.equal(p.counters.copiedPages, 6);
    assert.equal(p.counters.backgroundPages, 4);
    assert.deepEqual(p.lazy, [f.range(0, 2), f.range(10, 14)]);
  });
});

Deno.test("pager, answering later: a short reply puts the rest back", async () => {
  await withFixture({ pages: 8 }, (f) => {
    const { source, pager } = laterPager(f);
    const p = f.process([f.range(0, 8)]);
    assert.equal(pager.background(p), "done"); // pages 0..3
    const r = source.answer(1);
    assert.equal(pager.complete(r.pending, r.chunk), "done");
    f.holds(0, 0);
    assert.equal(p.counters.copiedPages, 1);
    assert.deepEqual(p.inflight, []);
    assert.deepEqual(owed(p), pagesOf([f.range(1, 8)]));
    assert.equal(source.released, 1);
  });
});

Deno.test("pager, answering later: events move and drop pages on their way", async () => {
  await withFixture({ pages: 16 }, (f) => {
    const { source, pager } = laterPager(f, 8 * P);
    const p = f.process([f.range(0, 8)]);
    assert.equal(pager.fault(p, f.at(0)), "done"); // 0..7 on their way
    assert.deepEqual(p.lazy, []);

    // The process moves pages 4..6 to 12..14 and unmaps page 1 before the
    // data arrives; a fork copies what is owed, in flight included.
    pager.remap(p, { from: f.at(4), to: f.at(12), len: 2 * P });
    pager.unmap(p, { start: f.at(1), end: f.at(2) });
    assert.equal(p.counters.droppedPages, 1);
    const child = pager.fork(p, 4321);
    assert.deepEqual(
      pagesOf(child.lazy).sort(),
      owed(p),
      "the child needs the pages in flight too",
    );
    assert.equal(child.counters.totalPages, 7);
    assert.deepEqual(child.inflight, []);

    const r = source.answer();
    assert.equal(pager.complete(r.pending, r.chunk), "done");
    for (const i of [0, 2, 3, 6, 7]) f.holds(i, i);
    f.holds(12, 4);
    f.holds(13, 5);
    assert.equal(p.counters.copiedPages, 7);
    assert.deepEqual(owed(p), []);
    assert.equal(p.drained, true);
  });
});

Deno.test("pager, answering later: a reply for a finished process is dropped", async () => {
  await withFixture({ pages: 4 }, (f) => {
    const { source, pager } = laterPager(f);
    const p = f.process([f.range(0, 4)]);
    assert.equal(pager.fault(p, f.at(0)), "done");
    p.end = "exited";
    const r = source.answer();
    assert.equal(pager.complete(r.pending, r.chunk), "done");
    assert.equal(p.counters.copiedPages, 0);
    assert.equal(source.released, 1);
    // Nothing was copied: the pages are still missing, so they are not
    // read here. The kernel agrees: a zero page still fits there.
    assert.equal(uffdZeropage(f.fd, { start: f.at(0), len: P }).error, 0);
  });
});

Deno.test("pager, answering later: a fault waiting on pages a short reply puts back is asked again", async () => {
  // A short reply is normal for a page server (a request spanning two of
  // its runs). A thread that faulted on a page beyond it must not wait for
  // the background pass (or for ever, without one): the page goes to
  // p.refaults, which the runtime handles as a fault again, at once.
  await withFixture({ pages: 8 }, (f) => {
    const { source, pager } = laterPager(f, 4 * P);
    const p = f.process([f.range(0, 8)]);
    assert.equal(pager.fault(p, f.at(0)), "done"); // thread A: 0..3
    assert.equal(pager.fault(p, f.at(3)), "done"); // thread B waits on 3
    assert.equal(source.queue.length, 1);
    const r = source.answer(1); // the server's run ends after page 0
    assert.equal(pager.complete(r.pending, r.chunk), "done");
    f.holds(0, 0);
    assert.deepEqual(p.refaults, [f.at(3)]);
    for (const a of p.refaults.splice(0)) pager.fault(p, a);
    const asked = source.queue.filter((q) =>
      q.request.urgent && q.request.image <= IMG + 3 * P &&
      IMG + 3 * P < q.request.image + q.request.len
    );
    assert.equal(asked.length, 1, "page 3 is asked for again, urgently");
  });
});
