/**
 * The FFI layer of lazyd: the only code that touches pointers. Everything
 * above it sees numbers, `Uint8Array`s and typed results.
 *
 * - `libc.ts`: the one symbol table, opened lazily. Deliberately not
 *   re-exported here, nor are the raw scratch structs of `buffer.ts`: code
 *   outside `ffi/` (tests aside) uses only the typed wrappers below.
 * - `errno.ts`: {@linkcode SysError}, {@linkcode E}, {@linkcode check}.
 * - `buffer.ts`: page-aligned {@linkcode PageBuffer}s and reusable scratch
 *   structs.
 * - `uffd.ts`, `uffd_msg.ts`: userfaultfd ioctls and messages.
 * - `socket.ts`: the restorer socket and SCM_RIGHTS.
 * - `epoll.ts`: {@linkcode Epoll} and eventfd.
 * - `process.ts`: fds, files, signals and pidfds.
 *
 * @module
 */
export { type Libc, libc, SYMBOLS } from "./libc.ts";
export {
  check,
  E,
  errno,
  errnoName,
  strerror,
  SysError,
  toSafeNumber,
} from "./errno.ts";
export {
  allocPages,
  getI64,
  getU64,
  MADV,
  madvise,
  PAGE_SIZE,
  PageBuffer,
  setU64,
} from "./buffer.ts";
export {
  CRIU_FEATURES,
  type FillResult,
  UFFD_API,
  UFFD_EVENT,
  UFFD_FEATURE,
  UFFD_PAGEFAULT_FLAG,
  UFFD_USER_MODE_ONLY,
  uffdApi,
  type UffdApiResult,
  uffdCopy,
  UFFDIO,
  UFFDIO_BIT,
  UFFDIO_MODE_DONTWAKE,
  UFFDIO_REGISTER_MODE,
  uffdRegister,
  uffdUnregister,
  uffdWake,
  uffdZeropage,
  userfaultfd,
} from "./uffd.ts";
export {
  decodeMessage,
  MAX_MESSAGES,
  readMessages,
  UFFD_MSG_SIZE,
  type UffdEvent,
} from "./uffd_msg.ts";
export {
  acceptOne,
  cmsgLen,
  cmsgSpace,
  connectUnix,
  listenUnix,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_NOSIGNAL,
  type PeerCred,
  peerCred,
  type ReceivedFd,
  recvExact,
  recvFd,
  SCM_RIGHTS,
  sendFd,
  SO_PEERCRED,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  socketpair,
  SOL_SOCKET,
} from "./socket.ts";
export {
  EFD,
  Epoll,
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  type EpollInterest,
  EPOLLOUT,
  EPOLLRDHUP,
  type EpollReady,
  eventfd,
  eventfdRead,
  eventfdWrite,
  MAX_EVENTS,
} from "./epoll.ts";
export {
  connectTcp,
  recvSome,
  resolveTcp,
  sendSome,
  setRecvLowat,
  shutdownWrite,
  type TcpAddress,
  type TcpConnection,
} from "./tcp.ts";
export {
  closeFd,
  getpid,
  getuid,
  kill,
  O,
  openRead,
  pidfdOpen,
  pidfdSendSignal,
  pread,
  readFd,
  setNonblocking,
  SIG,
  writeFd,
} from "./process.ts";
