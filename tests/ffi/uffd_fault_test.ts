/**
 * Real userfaultfd messages: a worker thread faults on (and remaps,
 * madvises, unmaps) memory registered with a uffd, while the test thread
 * plays the daemon: sync epoll_wait, readMessages, COPY/ZEROPAGE.
 */
import assert from "node:assert/strict";
import {
  allocPages,
  Epoll,
  EPOLLIN,
  PAGE_SIZE,
  readMessages,
  UFFD_FEATURE,
  UFFD_PAGEFAULT_FLAG,
  uffdApi,
  uffdCopy,
  uffdRegister,
  uffdZeropage,
} from "../../ffi/mod.ts";
import { closeAll, FaultThread, newUffd } from "./helpers.ts";

const P = PAGE_SIZE;

Deno.test("uffd: faults and non-cooperative events from another thread", async () => {
  const fd = newUffd();
  const region = allocPages(4 * P);
  const target = allocPages(P); // mremap destination (unregistered)
  const src = allocPages(P);
  const ep = new Epoll();
  const worker = new FaultThread({ timeoutMs: 5000 });
  const at = (page: number) => region.address + page * P;
  // The next batch of messages; the worker's thread is blocked until then.
  const next = () => {
    assert.deepEqual(ep.wait(5000), [{ token: 7, events: EPOLLIN }]);
    return readMessages(fd);
  };

  try {
    const api = uffdApi(fd, {
      features: UFFD_FEATURE.EVENT_REMAP | UFFD_FEATURE.EVENT_REMOVE |
        UFFD_FEATURE.EVENT_UNMAP,
    });
    assert.equal(api.features & 0x4c, 0x4c);
    uffdRegister(fd, { start: region.address, len: 4 * P });
    ep.add(fd, { events: EPOLLIN, token: 7 });
    assert.deepEqual(ep.wait(0), []);
    for (let i = 0; i < P; i++) src.bytes[i] = i % 251;

    // A read fault: no WRITE flag, and the address comes page aligned
    // (the kernel masks it unless UFFD_FEATURE_EXACT_ADDRESS is enabled).
    let reply = worker.run({ op: "read", address: at(0) + 100 });
    assert.deepEqual(next(), [{ kind: "pagefault", address: at(0), flags: 0 }]);
    assert.deepEqual(uffdCopy(fd, { dst: at(0), src: src.address, len: P }), {
      copied: P,
      error: 0,
    });
    assert.equal(await reply, 100 % 251);
    assert.deepEqual(ep.wait(0), []);

    // A write fault carries UFFD_PAGEFAULT_FLAG_WRITE.
    reply = worker.run({ op: "write", address: at(1) + 8, value: 9 });
    const [wf] = next();
    assert.equal(wf.kind, "pagefault");
    assert.ok(wf.kind === "pagefault" && wf.flags & UFFD_PAGEFAULT_FLAG.WRITE);
    assert.deepEqual(uffdZeropage(fd, { start: at(1), len: P }).error, 0);
    assert.equal(await reply, 9);
    assert.equal(region.bytes[P + 8], 9);

    // madvise(DONTNEED) → REMOVE; the worker's madvise returns only after
    // the event was read.
    reply = worker.run({ op: "madvise", address: at(0), len: P });
    assert.deepEqual(next(), [{
      kind: "remove",
      start: at(0),
      end: at(0) + P,
    }]);
    assert.equal(await reply, 0);

    // A moving mremap → REMAP (from, to, len), and only once that has been
    // read, a second event: UNMAP of the old range (the kernel unmaps the
    // old VMA after moving it). The worker is blocked until both are read.
    reply = worker.run({
      op: "mremap",
      from: at(2),
      len: P,
      to: target.address,
    });
    assert.deepEqual(next(), [
      { kind: "remap", from: at(2), to: target.address, len: P },
    ]);
    assert.deepEqual(next(), [{ kind: "unmap", start: at(2), end: at(2) + P }]);
    assert.equal(await reply, target.address);

    // munmap → UNMAP.
    reply = worker.run({ op: "munmap", address: at(3), len: P });
    assert.deepEqual(next(), [{ kind: "unmap", start: at(3), end: at(3) + P }]);
    assert.equal(await reply, 0);
    assert.deepEqual(readMessages(fd), []);
  } finally {
    // Closing the uffd first releases a worker still blocked in a fault or
    // event (it then sees zeros) and makes the munmaps below event-free.
    closeAll(fd);
    ep.close();
    worker.terminate();
    region.free();
    target.free();
    src.free();
  }
});
