import assert from "node:assert/strict";
import {
  E,
  Epoll,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  EPOLLRDHUP,
  eventfd,
  eventfdRead,
  eventfdWrite,
  socketpair,
  SysError,
  writeFd,
} from "../../ffi/mod.ts";
import { closeAll } from "./helpers.ts";

Deno.test("epoll: an eventfd write wakes a sync wait with its token", () => {
  const ep = new Epoll();
  const efd = eventfd();
  try {
    ep.add(efd, { events: EPOLLIN, token: 7 });
    assert.deepEqual(ep.wait(0), []);
    const t0 = performance.now();
    assert.deepEqual(ep.wait(30), []); // times out
    assert.ok(performance.now() - t0 >= 25);
    assert.equal(eventfdWrite(efd), true);
    eventfdWrite(efd, 4);
    assert.deepEqual(ep.wait(1000), [{ token: 7, events: EPOLLIN }]);
    assert.equal(eventfdRead(efd), 5); // counter read and reset
    assert.equal(eventfdRead(efd), 0); // EAGAIN on the non-blocking eventfd
    assert.deepEqual(ep.wait(0), []);
  } finally {
    closeAll(efd);
    ep.close();
  }
});

Deno.test("epoll: tokens are 64-bit safe; modify and remove work", () => {
  const ep = new Epoll();
  const efd = eventfd(1);
  try {
    const big = 2 ** 40 + 3;
    ep.add(efd, { events: EPOLLIN, token: big });
    assert.deepEqual(ep.wait(0), [{ token: big, events: EPOLLIN }]);
    ep.modify(efd, { events: EPOLLIN | EPOLLOUT, token: 1 });
    assert.deepEqual(ep.wait(0), [{ token: 1, events: EPOLLIN | EPOLLOUT }]);
    assert.throws(
      () => ep.add(efd, { events: EPOLLIN, token: 2 }),
      (e) => e instanceof SysError && e.errno === E.EEXIST,
    );
    ep.remove(efd);
    assert.deepEqual(ep.wait(0), []);
    assert.throws(
      () => ep.remove(efd),
      (e) => e instanceof SysError && e.code === "ENOENT",
    );
    assert.throws(
      () => ep.add(efd, { events: EPOLLIN, token: -1 }),
      RangeError,
    );
    assert.throws(() => ep.wait(0, 0), RangeError);
  } finally {
    closeAll(efd);
    ep.close();
  }
});

Deno.test("epoll: max limits one wait; the rest stays ready", () => {
  const ep = new Epoll();
  const fds = [eventfd(1), eventfd(1), eventfd(1)];
  try {
    fds.forEach((fd, i) => ep.add(fd, { events: EPOLLIN, token: i }));
    assert.equal(ep.wait(0, 2).length, 2);
    assert.equal(ep.wait(0).length, 3); // level-triggered
  } finally {
    closeAll(...fds);
    ep.close();
  }
});

Deno.test("epoll: a peer hang-up reports HUP and RDHUP", () => {
  const ep = new Epoll();
  const [a, b] = socketpair();
  try {
    ep.add(b, { events: EPOLLIN | EPOLLRDHUP, token: 9 });
    writeFd(a, new Uint8Array([1]));
    assert.deepEqual(ep.wait(0), [{ token: 9, events: EPOLLIN }]);
    closeAll(a);
    assert.deepEqual(ep.wait(0), [{
      token: 9,
      events: EPOLLIN | EPOLLRDHUP | EPOLLHUP,
    }]);
  } finally {
    closeAll(a, b);
    ep.close();
  }
});

Deno.test("epoll: waitAsync lets the event loop run while it waits", async () => {
  const ep = new Epoll();
  const efd = eventfd();
  try {
    ep.add(efd, { events: EPOLLIN, token: 3 });
    assert.deepEqual(await ep.waitAsync(10), []);
    const timer = setTimeout(() => eventfdWrite(efd), 20);
    const ready = await ep.waitAsync(5000);
    clearTimeout(timer);
    assert.deepEqual(ready, [{ token: 3, events: EPOLLIN }]);
    const pending = ep.waitAsync(5000);
    await assert.rejects(() => ep.waitAsync(0), /already pending/);
    eventfdWrite(efd);
    assert.equal((await pending).length, 1);
  } finally {
    closeAll(efd);
    ep.close();
  }
});

Deno.test("epoll: a bad fd is a SysError; a closed Epoll refuses use", () => {
  const ep = new Epoll();
  try {
    assert.throws(
      () => ep.add(1_000_000, { events: EPOLLIN, token: 0 }),
      (e) =>
        e instanceof SysError && e.code === "EBADF" &&
        e.call === "epoll_ctl(ADD)",
    );
  } finally {
    ep.close();
  }
  assert.throws(() => ep.wait(0), /after close/);
  ep.close(); // idempotent
});
