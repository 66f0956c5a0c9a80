/**
 * GnuTLS (`libgnutls.so.30`), for `--tls` connections to a page server.
 *
 * The library is opened lazily, on the first TLS call, so a daemon without
 * `--tls` never loads it (every host that runs CRIU has it anyway: CRIU
 * links it). The symbols below are the subset a non-blocking X.509 client
 * needs; each parameter carries its C type in a comment.
 *
 * Handles (`gnutls_session_t`, `gnutls_certificate_credentials_t`) are
 * pointers and therefore never leave this module: {@linkcode GnutlsSession}
 * and {@linkcode GnutlsCredentials} wrap them, map each method to one C
 * call, and return GnuTLS's integer result unchanged (a negative value is a
 * `GNUTLS_E_*` code, see {@linkcode GNUTLS_E}). The policy (which codes are
 * retried, which are errors, what the messages say) lives in
 * `src/source/tls.ts`. After `deinit()`/`free()` every method throws
 * instead of handing a dangling pointer to C.
 *
 * Memory GnuTLS keeps a pointer to: `gnutls_session_set_verify_cert` stores
 * the host name pointer itself (not a copy) and reads it during the
 * handshake, so the name lives in an `mmap`'d page owned by the session and
 * unmapped only after `gnutls_deinit`. All other `buffer` parameters are
 * read or written only during the (synchronous) call: `gnutls_record_send`
 * encrypts into GnuTLS's own buffer before it returns, even when it then
 * reports `GNUTLS_E_AGAIN`.
 *
 * The transport is GnuTLS's built-in one on a plain socket fd
 * (`gnutls_transport_set_int2`: `recv`/`sendmsg`), so no JS callback ever
 * runs inside GnuTLS. The fd must be non-blocking, or GnuTLS blocks.
 *
 * @module
 */
import {
  allocPages,
  type PageBuffer,
  type Scratch,
  scratch,
} from "./buffer.ts";

/** The GnuTLS symbols lazyd uses, with their C signatures. */
export const SYMBOLS = {
  /** `const char *gnutls_check_version(const char *req_version)` */
  gnutls_check_version: {
    parameters: [
      "pointer", // const char *req_version (NULL: just report the version)
    ],
    result: "pointer", // const char *
    nonblocking: false,
  },
  /** `const char *gnutls_strerror(int error)` */
  gnutls_strerror: {
    parameters: [
      "i32", // int error
    ],
    result: "pointer", // const char * (static)
    nonblocking: false,
  },
  /** `const char *gnutls_strerror_name(int error)` */
  gnutls_strerror_name: {
    parameters: [
      "i32", // int error
    ],
    result: "pointer", // const char * (static; NULL if unknown)
    nonblocking: false,
  },
  /** `int gnutls_error_is_fatal(int error)` */
  gnutls_error_is_fatal: {
    parameters: [
      "i32", // int error
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int gnutls_certificate_allocate_credentials(gnutls_certificate_credentials_t *res)` */
  gnutls_certificate_allocate_credentials: {
    parameters: [
      "pointer", // gnutls_certificate_credentials_t *res (out)
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `void gnutls_certificate_free_credentials(gnutls_certificate_credentials_t sc)` */
  gnutls_certificate_free_credentials: {
    parameters: [
      "pointer", // gnutls_certificate_credentials_t sc
    ],
    result: "void",
    nonblocking: false,
  },
  /** `int gnutls_certificate_set_x509_system_trust(gnutls_certificate_credentials_t cred)` */
  gnutls_certificate_set_x509_system_trust: {
    parameters: [
      "pointer", // gnutls_certificate_credentials_t cred
    ],
    result: "i32", // int: certificates loaded, or GNUTLS_E_*
    nonblocking: false,
  },
  /** `int gnutls_certificate_set_x509_trust_file(gnutls_certificate_credentials_t cred, const char *cafile, gnutls_x509_crt_fmt_t type)` */
  gnutls_certificate_set_x509_trust_file: {
    parameters: [
      "pointer", // gnutls_certificate_credentials_t cred
      "buffer", // const char *cafile (NUL-terminated)
      "i32", // gnutls_x509_crt_fmt_t type
    ],
    result: "i32", // int: certificates loaded, or GNUTLS_E_*
    nonblocking: false,
  },
  /** `int gnutls_certificate_set_x509_crl_file(gnutls_certificate_credentials_t res, const char *crlfile, gnutls_x509_crt_fmt_t type)` */
  gnutls_certificate_set_x509_crl_file: {
    parameters: [
      "pointer", // gnutls_certificate_credentials_t res
      "buffer", // const char *crlfile (NUL-terminated)
      "i32", // gnutls_x509_crt_fmt_t type
    ],
    result: "i32", // int: CRLs loaded, or GNUTLS_E_*
    nonblocking: false,
  },
  /** `int gnutls_certificate_set_x509_key_file(gnutls_certificate_credentials_t res, const char *certfile, const char *keyfile, gnutls_x509_crt_fmt_t type)` */
  gnutls_certificate_set_x509_key_file: {
    parameters: [
      "pointer", // gnutls_certificate_credentials_t res
      "buffer", // const char *certfile (NUL-terminated)
      "buffer", // const char *keyfile (NUL-terminated)
      "i32", // gnutls_x509_crt_fmt_t type
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int gnutls_certificate_verification_status_print(unsigned int status, gnutls_certificate_type_t type, gnutls_datum_t *out, unsigned int flags)` */
  gnutls_certificate_verification_status_print: {
    parameters: [
      "u32", // unsigned int status
      "i32", // gnutls_certificate_type_t type
      "pointer", // gnutls_datum_t *out (out; out->data freed with gnutls_free)
      "u32", // unsigned int flags
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int gnutls_init(gnutls_session_t *session, unsigned int flags)` */
  gnutls_init: {
    parameters: [
      "pointer", // gnutls_session_t *session (out)
      "u32", // unsigned int flags
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `void gnutls_deinit(gnutls_session_t session)` */
  gnutls_deinit: {
    parameters: [
      "pointer", // gnutls_session_t session
    ],
    result: "void",
    nonblocking: false,
  },
  /** `int gnutls_credentials_set(gnutls_session_t session, gnutls_credentials_type_t type, void *cred)` */
  gnutls_credentials_set: {
    parameters: [
      "pointer", // gnutls_session_t session
      "i32", // gnutls_credentials_type_t type
      "pointer", // void *cred (must outlive the session)
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `int gnutls_set_default_priority(gnutls_session_t session)` */
  gnutls_set_default_priority: {
    parameters: [
      "pointer", // gnutls_session_t session
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `void gnutls_session_set_verify_cert(gnutls_session_t session, const char *hostname, unsigned flags)` */
  gnutls_session_set_verify_cert: {
    parameters: [
      "pointer", // gnutls_session_t session
      "pointer", // const char *hostname (kept by GnuTLS, NULL = no name check)
      "u32", // unsigned flags
    ],
    result: "void",
    nonblocking: false,
  },
  /** `unsigned int gnutls_session_get_verify_cert_status(gnutls_session_t session)` */
  gnutls_session_get_verify_cert_status: {
    parameters: [
      "pointer", // gnutls_session_t session
    ],
    result: "u32", // unsigned int (gnutls_certificate_status_t bits)
    nonblocking: false,
  },
  /** `void gnutls_transport_set_int2(gnutls_session_t session, int recv_fd, int send_fd)` */
  gnutls_transport_set_int2: {
    parameters: [
      "pointer", // gnutls_session_t session
      "i32", // int recv_fd
      "i32", // int send_fd
    ],
    result: "void",
    nonblocking: false,
  },
  /** `int gnutls_handshake(gnutls_session_t session)` */
  gnutls_handshake: {
    parameters: [
      "pointer", // gnutls_session_t session
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `ssize_t gnutls_record_recv(gnutls_session_t session, void *data, size_t data_size)` */
  gnutls_record_recv: {
    parameters: [
      "pointer", // gnutls_session_t session
      "buffer", // void *data
      "usize", // size_t data_size
    ],
    result: "isize", // ssize_t
    nonblocking: false,
  },
  /** `ssize_t gnutls_record_send(gnutls_session_t session, const void *data, size_t data_size)` */
  gnutls_record_send: {
    parameters: [
      "pointer", // gnutls_session_t session
      "buffer", // const void *data (NULL with size 0: flush the interrupted record)
      "usize", // size_t data_size
    ],
    result: "isize", // ssize_t
    nonblocking: false,
  },
  /** `size_t gnutls_record_check_pending(gnutls_session_t session)` */
  gnutls_record_check_pending: {
    parameters: [
      "pointer", // gnutls_session_t session
    ],
    result: "usize", // size_t
    nonblocking: false,
  },
  /** `int gnutls_record_get_direction(gnutls_session_t session)` */
  gnutls_record_get_direction: {
    parameters: [
      "pointer", // gnutls_session_t session
    ],
    result: "i32", // int: 0 = was reading, 1 = was writing
    nonblocking: false,
  },
  /** `int gnutls_bye(gnutls_session_t session, gnutls_close_request_t how)` */
  gnutls_bye: {
    parameters: [
      "pointer", // gnutls_session_t session
      "i32", // gnutls_close_request_t how
    ],
    result: "i32", // int
    nonblocking: false,
  },
  /** `gnutls_alert_description_t gnutls_alert_get(gnutls_session_t session)` */
  gnutls_alert_get: {
    parameters: [
      "pointer", // gnutls_session_t session
    ],
    result: "i32", // gnutls_alert_description_t
    nonblocking: false,
  },
  /** `const char *gnutls_alert_get_name(gnutls_alert_description_t alert)` */
  gnutls_alert_get_name: {
    parameters: [
      "i32", // gnutls_alert_description_t alert
    ],
    result: "pointer", // const char * (static; NULL if unknown)
    nonblocking: false,
  },
  /** `gnutls_protocol_t gnutls_protocol_get_version(gnutls_session_t session)` */
  gnutls_protocol_get_version: {
    parameters: [
      "pointer", // gnutls_session_t session
    ],
    result: "i32", // gnutls_protocol_t
    nonblocking: false,
  },
  /** `const char *gnutls_protocol_get_name(gnutls_protocol_t version)` */
  gnutls_protocol_get_name: {
    parameters: [
      "i32", // gnutls_protocol_t version
    ],
    result: "pointer", // const char * (static; NULL if unknown)
    nonblocking: false,
  },
  /**
   * `extern gnutls_free_function gnutls_free`: a variable holding the
   * deallocator for memory GnuTLS hands out (a function pointer, not a
   * function). Deno gives the variable's address.
   */
  gnutls_free: { type: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The typed symbols of {@linkcode SYMBOLS}. */
export type Gnutls = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** The shared object lazyd opens (GnuTLS 3.x ABI). */
export const GNUTLS_LIBRARY = "libgnutls.so.30";

let lib: Gnutls | undefined;

/**
 * The GnuTLS symbols, opening {@linkcode GNUTLS_LIBRARY} on first use (and
 * keeping it open for the life of the process). Throws `Error` naming the
 * library if it cannot be loaded.
 */
export function gnutls(): Gnutls {
  if (lib === undefined) {
    try {
      lib = Deno.dlopen(GNUTLS_LIBRARY, SYMBOLS).symbols;
    } catch (e) {
      throw new Error(
        `--tls needs GnuTLS (${GNUTLS_LIBRARY}), which could not be loaded: ${
          e instanceof Error ? e.message : e
        }`,
        { cause: e },
      );
    }
  }
  return lib;
}

/** `GNUTLS_E_*` codes lazyd distinguishes (all negative; 0 is success). */
export const GNUTLS_E = {
  SUCCESS: 0,
  UNEXPECTED_PACKET_LENGTH: -9,
  FATAL_ALERT_RECEIVED: -12,
  UNEXPECTED_PACKET: -15,
  WARNING_ALERT_RECEIVED: -16,
  AGAIN: -28,
  BASE64_DECODING_ERROR: -34,
  REHANDSHAKE: -37,
  GOT_APPLICATION_DATA: -38,
  CERTIFICATE_ERROR: -43,
  NO_CERTIFICATE_FOUND: -49,
  INVALID_REQUEST: -50,
  INTERRUPTED: -52,
  PUSH_ERROR: -53,
  PULL_ERROR: -54,
  CERTIFICATE_KEY_MISMATCH: -60,
  FILE_ERROR: -64,
  PREMATURE_TERMINATION: -110,
  CERTIFICATE_REQUIRED: -112,
  TIMEDOUT: -319,
  SESSION_EOF: -328,
  CERTIFICATE_VERIFICATION_ERROR: -348,
} as const;

/** `gnutls_init` flags. */
export const GNUTLS_INIT = {
  SERVER: 1,
  CLIENT: 1 << 1,
  /** Non-blocking transport: E_AGAIN instead of waiting. */
  NONBLOCK: 1 << 3,
  /** Send with MSG_NOSIGNAL: EPIPE instead of SIGPIPE. */
  NO_SIGNAL: 1 << 6,
} as const;

/** `gnutls_close_request_t`. */
export const GNUTLS_SHUT = {
  /** Send close_notify and wait for the peer's. */
  RDWR: 0,
  /** Send close_notify only. */
  WR: 1,
} as const;

/** `gnutls_certificate_status_t` bits (verification results). */
export const GNUTLS_CERT = {
  INVALID: 1 << 1,
  REVOKED: 1 << 5,
  SIGNER_NOT_FOUND: 1 << 6,
  SIGNER_NOT_CA: 1 << 7,
  INSECURE_ALGORITHM: 1 << 8,
  NOT_ACTIVATED: 1 << 9,
  EXPIRED: 1 << 10,
  SIGNATURE_FAILURE: 1 << 11,
  REVOCATION_DATA_SUPERSEDED: 1 << 12,
  UNEXPECTED_OWNER: 1 << 14,
  REVOCATION_DATA_ISSUED_IN_FUTURE: 1 << 15,
  SIGNER_CONSTRAINTS_FAILURE: 1 << 16,
  MISMATCH: 1 << 17,
  PURPOSE_MISMATCH: 1 << 18,
} as const;

const GNUTLS_CRD_CERTIFICATE = 1;
const GNUTLS_X509_FMT_PEM = 1;
const GNUTLS_CRT_X509 = 1;

const encoder = new TextEncoder();

function cString(s: string, what: string): Uint8Array {
  if (s.includes("\0")) {
    throw new RangeError(`${what} must not contain NUL: ${JSON.stringify(s)}`);
  }
  return encoder.encode(s + "\0");
}

function staticString(p: Deno.PointerValue): string | null {
  return p === null ? null : Deno.UnsafePointerView.getCString(p);
}

/** The run-time GnuTLS version, e.g. `"3.7.9"`. */
export function gnutlsVersion(): string {
  return staticString(gnutls().gnutls_check_version(null)) ?? "unknown";
}

/** GnuTLS's message for a code (`gnutls_strerror`), e.g. `"Resource temporarily unavailable, try again."`. */
export function gnutlsStrerror(code: number): string {
  return staticString(gnutls().gnutls_strerror(code)) ?? `GnuTLS error ${code}`;
}

/** The code's symbolic name (`gnutls_strerror_name`), e.g. `"GNUTLS_E_AGAIN"`; `"GNUTLS_E(<n>)"` if unknown. */
export function gnutlsErrorName(code: number): string {
  return staticString(gnutls().gnutls_strerror_name(code)) ??
    `GNUTLS_E(${code})`;
}

/** `gnutls_error_is_fatal`: whether the session is unusable after `code`. */
export function gnutlsErrorIsFatal(code: number): boolean {
  return gnutls().gnutls_error_is_fatal(code) !== 0;
}

/** The name of a TLS alert number (`gnutls_alert_get_name`), e.g. `"Certificate is required"`. */
export function gnutlsAlertName(alert: number): string {
  return staticString(gnutls().gnutls_alert_get_name(alert)) ??
    `alert ${alert}`;
}

let datum: Scratch | undefined; // gnutls_datum_t: data ptr @0, size u32 @8
/** `void gnutls_free_function(void *ptr)` */
const FREE_FUNCTION = {
  parameters: [
    "pointer", // void *ptr
  ],
  result: "void",
} as const satisfies Deno.UnsafeCallbackDefinition;
let free: Deno.UnsafeFnPointer<typeof FREE_FUNCTION> | undefined;

function gnutlsFree(p: Deno.PointerObject): void {
  if (free === undefined) {
    // gnutls_free is a variable: read the function pointer it holds.
    const variable = gnutls().gnutls_free;
    const fn = variable === null
      ? null
      : new Deno.UnsafePointerView(variable).getPointer(0);
    if (fn === null) throw new Error("gnutls_free is NULL");
    free = new Deno.UnsafeFnPointer(
      fn as Deno.PointerObject<typeof FREE_FUNCTION>,
      FREE_FUNCTION,
    );
  }
  free.call(p);
}

/**
 * `gnutls_certificate_verification_status_print` for an X.509 status:
 * GnuTLS's human-readable reasons, e.g. `"The certificate is NOT trusted.
 * The certificate issuer is unknown."`. Throws `Error` if GnuTLS fails.
 */
export function verificationStatusText(status: number): string {
  const d = (datum ??= scratch(16));
  d.bytes.fill(0);
  const r = gnutls().gnutls_certificate_verification_status_print(
    status,
    GNUTLS_CRT_X509,
    d.pointer,
    0,
  );
  if (r < 0) {
    throw new Error(
      `gnutls_certificate_verification_status_print: ${gnutlsStrerror(r)}`,
    );
  }
  const data = new Deno.UnsafePointerView(d.pointer).getPointer(0);
  if (data === null) return "";
  try {
    const size = d.view.getUint32(8, true);
    const bytes = new Uint8Array(size);
    Deno.UnsafePointerView.copyInto(data, bytes);
    return new TextDecoder().decode(bytes).replace(/\0+$/, "").trim();
  } finally {
    gnutlsFree(data);
  }
}

/** A GnuTLS call that failed: which call, the code and GnuTLS's message. */
export class GnutlsError extends Error {
  /** The GnuTLS function, e.g. `"gnutls_init"`. */
  readonly call: string;
  /** The negative `GNUTLS_E_*` code. */
  readonly code: number;

  /** Builds the error; the message is `call: strerror (GNUTLS_E_NAME)`. */
  constructor(call: string, code: number) {
    super(`${call}: ${gnutlsStrerror(code)} (${gnutlsErrorName(code)})`);
    this.name = "GnutlsError";
    this.call = call;
    this.code = code;
  }
}

// Out-parameter for the two allocating calls (a handle is one pointer).
let handleOut: Scratch | undefined;

function allocateHandle(
  call: string,
  fn: (out: Deno.PointerObject) => number,
): Deno.PointerObject {
  const s = (handleOut ??= scratch(8));
  s.bytes.fill(0);
  const r = fn(s.pointer);
  if (r < 0) throw new GnutlsError(call, r);
  const p = new Deno.UnsafePointerView(s.pointer).getPointer(0);
  if (p === null) throw new Error(`${call} returned a NULL handle`);
  return p;
}

// Lets GnutlsSession read a credentials' pointer; assigned in a static block
// of GnutlsCredentials, so nothing outside this module can.
let credentialsPointer: (c: GnutlsCredentials) => Deno.PointerObject;

/**
 * A `gnutls_certificate_credentials_t`: trusted CAs, CRLs and our own
 * certificate and key. Must outlive every session it is set on; release
 * with {@linkcode GnutlsCredentials.free}.
 */
export class GnutlsCredentials {
  #handle: Deno.PointerObject | null;

  static {
    credentialsPointer = (c) => c.#p();
  }

  private constructor(p: Deno.PointerObject) {
    this.#handle = p;
  }

  /** `gnutls_certificate_allocate_credentials`. Throws {@linkcode GnutlsError}. */
  static allocate(): GnutlsCredentials {
    return new GnutlsCredentials(
      allocateHandle(
        "gnutls_certificate_allocate_credentials",
        (out) => gnutls().gnutls_certificate_allocate_credentials(out),
      ),
    );
  }

  #p(): Deno.PointerObject {
    const p = this.#handle;
    if (p === null) throw new Error("GnuTLS credentials used after free()");
    return p;
  }

  /** `gnutls_certificate_set_x509_system_trust`: the number of CAs added, or a GNUTLS_E code. */
  setSystemTrust(): number {
    return gnutls().gnutls_certificate_set_x509_system_trust(this.#p());
  }

  /** `gnutls_certificate_set_x509_trust_file` (PEM): the number of CAs added, or a GNUTLS_E code. */
  setTrustFile(path: string): number {
    return gnutls().gnutls_certificate_set_x509_trust_file(
      this.#p(),
      cString(path, "CA file"),
      GNUTLS_X509_FMT_PEM,
    );
  }

  /** `gnutls_certificate_set_x509_crl_file` (PEM): the number of CRLs added, or a GNUTLS_E code. */
  setCrlFile(path: string): number {
    return gnutls().gnutls_certificate_set_x509_crl_file(
      this.#p(),
      cString(path, "CRL file"),
      GNUTLS_X509_FMT_PEM,
    );
  }

  /** `gnutls_certificate_set_x509_key_file` (PEM): 0 or a GNUTLS_E code. */
  setKeyFile(certPath: string, keyPath: string): number {
    return gnutls().gnutls_certificate_set_x509_key_file(
      this.#p(),
      cString(certPath, "certificate file"),
      cString(keyPath, "key file"),
      GNUTLS_X509_FMT_PEM,
    );
  }

  /** `gnutls_certificate_free_credentials`. Idempotent; later calls throw. */
  free(): void {
    const p = this.#handle;
    if (p === null) return;
    this.#handle = null;
    gnutls().gnutls_certificate_free_credentials(p);
  }
}

/**
 * A `gnutls_session_t`. Every method is one GnuTLS call; results are
 * returned as GnuTLS gives them (negative = `GNUTLS_E_*` code). Release
 * with {@linkcode GnutlsSession.deinit}.
 */
export class GnutlsSession {
  #p: Deno.PointerObject | null;
  // The verification host name; GnuTLS keeps its address (see module doc).
  #hostname: PageBuffer | undefined;

  private constructor(p: Deno.PointerObject) {
    this.#p = p;
  }

  /** `gnutls_init` with {@linkcode GNUTLS_INIT} flags. Throws {@linkcode GnutlsError}. */
  static init(flags: number): GnutlsSession {
    return new GnutlsSession(
      allocateHandle("gnutls_init", (out) => gnutls().gnutls_init(out, flags)),
    );
  }

  #s(): Deno.PointerObject {
    if (this.#p === null) throw new Error("GnuTLS session used after deinit()");
    return this.#p;
  }

  /** `gnutls_credentials_set(GNUTLS_CRD_CERTIFICATE)`: 0 or a GNUTLS_E code. */
  setCredentials(credentials: GnutlsCredentials): number {
    return gnutls().gnutls_credentials_set(
      this.#s(),
      GNUTLS_CRD_CERTIFICATE,
      credentialsPointer(credentials),
    );
  }

  /** `gnutls_set_default_priority`: 0 or a GNUTLS_E code. */
  setDefaultPriority(): number {
    return gnutls().gnutls_set_default_priority(this.#s());
  }

  /**
   * `gnutls_session_set_verify_cert(session, hostname, 0)`: verify the
   * peer's chain (and, unless `hostname` is null, its name) inside the
   * handshake, which then fails with
   * `GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR`. Call at most once.
   */
  setVerifyCert(hostname: string | null): void {
    const s = this.#s();
    if (this.#hostname !== undefined) {
      throw new Error("setVerifyCert may be called only once per session");
    }
    let name: Deno.PointerObject | null = null;
    if (hostname !== null) {
      const bytes = cString(hostname, "host name");
      this.#hostname = allocPages(bytes.length);
      this.#hostname.bytes.set(bytes);
      name = this.#hostname.pointer;
    }
    gnutls().gnutls_session_set_verify_cert(s, name, 0);
  }

  /** `gnutls_session_get_verify_cert_status`: {@linkcode GNUTLS_CERT} bits of the last auto-verification. */
  verifyCertStatus(): number {
    return gnutls().gnutls_session_get_verify_cert_status(this.#s());
  }

  /** `gnutls_transport_set_int2(session, fd, fd)`: GnuTLS's own recv/send on `fd`. */
  setTransportFd(fd: number): void {
    gnutls().gnutls_transport_set_int2(this.#s(), fd, fd);
  }

  /** `gnutls_handshake`: 0 or a GNUTLS_E code. */
  handshake(): number {
    return gnutls().gnutls_handshake(this.#s());
  }

  /** `gnutls_record_recv` into `into`: bytes (0 = close_notify) or a GNUTLS_E code. */
  recordRecv(into: Uint8Array): number {
    return Number(
      gnutls().gnutls_record_recv(this.#s(), into, BigInt(into.length)),
    );
  }

  /**
   * `gnutls_record_send`: bytes of `data` sent, or a GNUTLS_E code. `null`
   * passes (NULL, 0), which resumes a record interrupted by E_AGAIN and
   * returns that record's byte count.
   */
  recordSend(data: Uint8Array | null): number {
    return Number(
      gnutls().gnutls_record_send(
        this.#s(),
        data,
        BigInt(data === null ? 0 : data.length),
      ),
    );
  }

  /** `gnutls_record_check_pending`: decrypted application bytes buffered in GnuTLS. */
  recordCheckPending(): number {
    return Number(gnutls().gnutls_record_check_pending(this.#s()));
  }

  /** `gnutls_record_get_direction`: 0 if the last interrupted call was reading, 1 if writing. */
  recordGetDirection(): number {
    return gnutls().gnutls_record_get_direction(this.#s());
  }

  /** `gnutls_bye` with a {@linkcode GNUTLS_SHUT} mode: 0 or a GNUTLS_E code. */
  bye(how: number): number {
    return gnutls().gnutls_bye(this.#s(), how);
  }

  /** `gnutls_alert_get`: the last alert received (meaningful after an alert error). */
  alert(): number {
    return gnutls().gnutls_alert_get(this.#s());
  }

  /** The negotiated protocol's name, e.g. `"TLS1.3"` (`gnutls_protocol_get_name`). */
  protocolName(): string {
    const v = gnutls().gnutls_protocol_get_version(this.#s());
    return staticString(gnutls().gnutls_protocol_get_name(v)) ?? "unknown";
  }

  /** `gnutls_deinit`, then frees the host name page. Idempotent; later calls throw. */
  deinit(): void {
    const p = this.#p;
    if (p === null) return;
    this.#p = null;
    gnutls().gnutls_deinit(p);
    this.#hostname?.free();
    this.#hostname = undefined;
  }
}
