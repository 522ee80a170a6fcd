//! The scrape endpoint: one background thread answering `GET /metrics` (the Prometheus text
//! exposition of [`crate::report`]) and `GET /stats.json` (the JSON report) on a TCP address, for
//! a service that never exits (`SQLALLOC_LISTEN`, `sqlalloc_serve`, [`crate::serve()`]).
//!
//! # What it guarantees the program
//!
//! - **No lock on the allocation path.** Each answer is a [`Report`] captured at that moment:
//!   the counters, the footprint and the limit are read without any lock of the allocator (see
//!   [`Report::capture`]); SQLite's own figures go through `sqlite3_status64`, which takes
//!   SQLite's malloc mutex for a few instructions, from this thread and never from inside an
//!   allocation.
//! - **Bounded work.** One thread, [`MAX_CLIENTS`] connections at once (more wait in the
//!   kernel's accept queue), a request head of at most [`MAX_HEAD`] bytes, a client that sends
//!   nothing for [`IDLE`] dropped, and every connection closed [`DEADLINE`] after it was
//!   accepted, answered or not. Each connection gets one answer and is closed
//!   (`Connection: close`): no keep-alive state, no pipelining.
//! - **Two documents and nothing else.** `GET` or `HEAD` of `/metrics` or `/stats.json` (a query
//!   string is ignored); any other method gets 405, any other path 404, a head over 8 KiB 431, a
//!   malformed head 400, an HTTP version other than 1.0/1.1 505 — each a short text body, then
//!   the close. Nothing is read from the disk, nothing else is executed.
//! - **Never stops the program.** Writes use `send(MSG_NOSIGNAL)`, so a client that went away
//!   raises no `SIGPIPE` in a C program that did not ignore it; every error closes that one
//!   connection; a panic cannot unwind out of the thread (the libraries abort on panic, and
//!   nothing here panics on any input: the request parser is fuzzed, `fuzz/fuzz_targets/http.rs`).
//!
//! # Why the HTTP handling is written here
//!
//! The well-kept server crates (hyper, axum, tiny_http, …) bring an async runtime or a thread
//! pool, keep-alive, chunked bodies, header maps and dozens of dependencies: everything this
//! endpoint must not do inside somebody else's process (the preload runs in unmodified programs)
//! for two fixed documents. What it needs — read one request head, match two paths, write one
//! response, close — is the 150 lines of [`route`] and `Server`, with `poll(2)` as the only
//! event source. The request parser is a pure function over the bytes received so far, so it is
//! fuzzed and unit-tested on its own.
//!
//! # Its own descriptor table, and `fork`
//!
//! The thread first takes a descriptor table of its own (`src/fdtable.rs`: a second thread
//! sharing the program's table makes every `pread`, `pwrite` and `fcntl` of SQLite's slower), and
//! only then creates its listening socket, so that no socket of the endpoint is ever among the
//! program's descriptors: a forked child does not inherit any, and the child may call [`serve`]
//! again (on a port of its own).
//!
//! Where `unshare` is refused, the thread shares the program's table, and a child would inherit
//! the listening socket that nobody in it answers: the child handler (`pthread_atfork`,
//! `src/forking.rs`) then closes it and every connection socket, whose descriptors are kept in
//! atomics for that handler. A connection accepted in the few instructions between `accept` and
//! its recording may stay open in a child that forks right then, until the child exits.

use crate::error::Error;
use crate::report::{Format, Report};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most connections served at once; more wait in the kernel's accept queue.
pub const MAX_CLIENTS: usize = 64;
/// Longest request head (request line and headers) accepted, in bytes.
pub const MAX_HEAD: usize = 8192;
/// A client that sends nothing for this long is dropped.
pub const IDLE: Duration = Duration::from_secs(5);
/// Every connection is closed this long after it was accepted, answered or not.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `/metrics`: the Prometheus exposition (`head`: a `HEAD` request, no body).
    Metrics {
        /// Headers only.
        head: bool,
    },
    /// `/stats.json`: the JSON report.
    Json {
        /// Headers only.
        head: bool,
    },
    /// An error status and its reason phrase.
    Error(u16, &'static str),
}

/// Decide the answer to the bytes a client sent so far: `None` while the head is incomplete and
/// still within [`MAX_HEAD`]. Never panics, on any input.
pub fn route(buf: &[u8]) -> Option<Answer> {
    // Empty lines before the request line are ignored (RFC 9112, 2.2).
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let end = match find_head_end(rest) {
        Some(end) if start + end <= MAX_HEAD => end,
        Some(_) => return Some(Answer::Error(431, "Request Header Fields Too Large")),
        None if buf.len() >= MAX_HEAD => {
            return Some(Answer::Error(431, "Request Header Fields Too Large"))
        }
        None => return None,
    };
    let bad = Some(Answer::Error(400, "Bad Request"));
    let Ok(head) = std::str::from_utf8(&rest[..end]) else {
        return bad;
    };
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    for header in lines.filter(|l| !l.is_empty()) {
        // `name: value`, the name a token (no space before the colon).
        match header.split_once(':') {
            Some((name, _)) if !name.is_empty() && name.bytes().all(is_tchar) => {}
            _ => return bad,
        }
        if header.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return bad;
        }
    }
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad;
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return bad;
    }
    if target.is_empty() || target.bytes().any(|b| !b.is_ascii_graphic()) {
        return bad;
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") && v.len() > 5 => {
            return Some(Answer::Error(505, "HTTP Version Not Supported"))
        }
        _ => return bad,
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Some(Answer::Error(405, "Method Not Allowed")),
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    match path {
        "/metrics" => Some(Answer::Metrics { head: head_only }),
        "/stats.json" => Some(Answer::Json { head: head_only }),
        _ => Some(Answer::Error(404, "Not Found")),
    }
}

/// Index just past the blank line that ends a head (`\r\n\r\n` or a bare `\n\n`), if any.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            let next = &buf[i + 1..];
            if next.first() == Some(&b'\n') {
                return Some(i + 2);
            }
            if next.starts_with(b"\r\n") {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The full response to `answer`: status line, headers and (unless `HEAD`) the body.
pub fn respond(answer: Answer) -> Vec<u8> {
    let (status, reason, ctype, body, head) = match answer {
        Answer::Metrics { head } | Answer::Json { head } => {
            let format = if matches!(answer, Answer::Metrics { .. }) {
                Format::Prometheus
            } else {
                Format::Json
            };
            let ctype = match format {
                Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
                _ => "application/json",
            };
            match Report::capture_installed() {
                Some(r) => (200, "OK", ctype, r.render(format), head),
                None => (
                    503,
                    "Service Unavailable",
                    "text/plain; charset=utf-8",
                    "503 Service Unavailable: no sqlalloc allocator is installed\n".to_string(),
                    head,
                ),
            }
        }
        Answer::Error(status, reason) => {
            let why = match status {
                405 => "only GET and HEAD are served",
                404 => "the paths served are /metrics and /stats.json",
                431 => "the request head is over 8192 bytes",
                505 => "only HTTP/1.0 and HTTP/1.1 are served",
                _ => "malformed request",
            };
            (
                status,
                reason,
                "text/plain; charset=utf-8",
                format!("{status} {reason}: {why}\n"),
                false,
            )
        }
    };
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Addresses.

/// Parse `[HOST:]PORT` (the syntax of `SQLALLOC_LISTEN`): HOST is an IPv4 address, an IPv6
/// address in brackets, or `localhost`; without it, 127.0.0.1. The error says what is wrong.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty address: use [HOST:]PORT, for instance 9187 or 127.0.0.1:9187".into());
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if h.starts_with('[') || !h.contains(':') => (Some(h), p),
        Some(_) => {
            return Err(format!(
                "'{s}': an IPv6 address must be in brackets, as in [::1]:9187"
            ))
        }
        None => (None, s),
    };
    let port: u16 = match port.parse::<u32>() {
        Ok(p) if p <= 65535 => p as u16,
        Ok(p) => return Err(format!("'{s}': port {p} is out of range (0-65535)")),
        Err(_) if port.is_empty() => return Err(format!("'{s}': no port after the ':'")),
        Err(_) => return Err(format!("'{s}': port '{port}' is not a number")),
    };
    let ip = match host {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some("") => return Err(format!("'{s}': empty host before the ':'")),
        Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(h) => {
            let inner = h
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(h);
            match inner.parse::<IpAddr>() {
                Ok(IpAddr::V6(a)) if h.starts_with('[') => IpAddr::V6(a),
                Ok(IpAddr::V4(a)) if !h.starts_with('[') => IpAddr::V4(a),
                _ => {
                    return Err(format!(
                        "'{s}': host '{h}' is not an IP address (or localhost)"
                    ))
                }
            }
        }
    };
    Ok(SocketAddr::new(ip, port))
}

// ---------------------------------------------------------------------------------------------
// The server.

/// The listening socket of this process's server (-1: none), for the fork handler.
static LISTEN_FD: AtomicI32 = AtomicI32::new(-1);
/// The connection sockets open now (-1: free slot), for the fork handler.
static CLIENT_FDS: [AtomicI32; MAX_CLIENTS] = [const { AtomicI32::new(-1) }; MAX_CLIENTS];
/// Whether this process serves (set by [`serve`], cleared in a forked child).
static SERVING: AtomicBool = AtomicBool::new(false);
/// The address served, for the "already serving" error.
static SERVED: Mutex<Option<SocketAddr>> = Mutex::new(None);

/// Start serving the installed allocator's reports on `addr` (`[HOST:]PORT`, see
/// [`parse_addr`]) from a new background thread; returns the address bound (port 0 picks a free
/// port). Errors: [`Error::BadAddress`], [`Error::CannotListen`] (the port is in use, say),
/// [`Error::AlreadyServing`].
pub fn serve(addr: &str) -> Result<SocketAddr, Error> {
    let parsed = parse_addr(addr).map_err(|reason| Error::BadAddress {
        addr: addr.to_string(),
        reason,
    })?;
    let mut served = SERVED.lock().unwrap_or_else(|e| e.into_inner());
    if SERVING.load(Ordering::Acquire) {
        return Err(Error::AlreadyServing {
            addr: served.map_or_else(String::new, |a| a.to_string()),
        });
    }
    let cannot = |reason: String| Error::CannotListen {
        addr: parsed.to_string(),
        reason,
    };
    crate::forking::register();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("sqlalloc-serve".into())
        .spawn(move || {
            // First a descriptor table of its own (src/fdtable.rs), so that the socket is
            // created in it and never appears among the program's descriptors.
            let private = crate::fdtable::own_empty_table();
            match listen(parsed) {
                Ok((listener, local)) => {
                    if !private {
                        LISTEN_FD.store(listener.as_raw_fd(), Ordering::Release);
                    }
                    let _ = tx.send(Ok(local));
                    Server::new(listener, !private).run();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
        .map_err(|e| cannot(e.to_string()))?;
    let local = rx
        .recv()
        .map_err(|_| cannot("the server thread ended before listening".into()))?
        .map_err(|e| cannot(e.to_string()))?;
    SERVING.store(true, Ordering::Release);
    *served = Some(local);
    Ok(local)
}

/// Bind `addr`, non-blocking; the listener and the address bound.
fn listen(addr: SocketAddr) -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// In a forked child (from the `pthread_atfork` handler, the only thread): close the sockets the
/// parent's server thread had open, which nobody in the child answers, and allow [`serve`] again.
pub(crate) fn after_fork_in_child() {
    let fd = LISTEN_FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        // SAFETY: `fd` was the server's listening socket in the parent; the child inherited it
        // and no object of the child owns it (the server thread does not exist here).
        unsafe { libc::close(fd) };
    }
    for slot in &CLIENT_FDS {
        let fd = slot.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: as above, for a connection socket of the parent's server.
            unsafe { libc::close(fd) };
        }
    }
    SERVING.store(false, Ordering::Release);
    // The mutex may have been held by a parent thread at the fork: start from a new one's state.
    if let Ok(mut s) = SERVED.try_lock() {
        *s = None;
    }
}

/// One connection being served.
struct Client {
    stream: TcpStream,
    /// Index in [`CLIENT_FDS`] (`None`: the server has a table of its own, nothing to record).
    slot: Option<usize>,
    /// The head received so far (reading) …
    input: Vec<u8>,
    /// … or the response and how much of it was sent (writing).
    output: Option<(Vec<u8>, usize)>,
    accepted: Instant,
    last_input: Instant,
}

struct Server {
    listener: TcpListener,
    clients: Vec<Client>,
    /// Whether the server shares the program's descriptor table (`unshare` was refused), so that
    /// its connection sockets must be recorded for the fork handler.
    shared_table: bool,
}

impl Server {
    fn new(listener: TcpListener, shared_table: bool) -> Server {
        Server {
            listener,
            clients: Vec::with_capacity(MAX_CLIENTS),
            shared_table,
        }
    }

    fn run(mut self) {
        loop {
            let now = Instant::now();
            self.clients.retain(|c| {
                let keep = now < c.accepted + DEADLINE
                    && (c.output.is_some() || now < c.last_input + IDLE);
                if !keep {
                    close_slot(c.slot);
                }
                keep
            });
            let accepting = self.clients.len() < MAX_CLIENTS;
            let mut fds = Vec::with_capacity(self.clients.len() + 1);
            fds.push(libc::pollfd {
                fd: if accepting {
                    self.listener.as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            });
            for c in &self.clients {
                fds.push(libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events: if c.output.is_some() {
                        libc::POLLOUT
                    } else {
                        libc::POLLIN
                    },
                    revents: 0,
                });
            }
            let wait = self
                .clients
                .iter()
                .map(|c| {
                    let end = c.accepted + DEADLINE;
                    if c.output.is_some() {
                        end
                    } else {
                        end.min(c.last_input + IDLE)
                    }
                })
                .min()
                .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
                .min(Duration::from_secs(1));
            // Round up, so that a deadline 0.4 ms away is not polled for 0 ms in a tight loop.
            let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if n < 0 {
                if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let ready: Vec<bool> = fds[1..].iter().map(|p| p.revents != 0).collect();
            let mut ready = ready.into_iter();
            self.clients.retain_mut(|c| {
                let keep = !ready.next().unwrap_or(false) || step(c);
                if !keep {
                    close_slot(c.slot);
                }
                keep
            });
            if accepting && fds[0].revents != 0 {
                self.accept_all();
            }
        }
    }

    fn accept_all(&mut self) {
        while self.clients.len() < MAX_CLIENTS {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let slot = if self.shared_table {
                        let Some(slot) = CLIENT_FDS.iter().position(|s| {
                            s.compare_exchange(
                                -1,
                                stream.as_raw_fd(),
                                Ordering::AcqRel,
                                Ordering::Relaxed,
                            )
                            .is_ok()
                        }) else {
                            continue;
                        };
                        Some(slot)
                    } else {
                        None
                    };
                    let now = Instant::now();
                    self.clients.push(Client {
                        stream,
                        slot,
                        input: Vec::new(),
                        output: None,
                        accepted: now,
                        last_input: now,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: all taken; anything else (out of descriptors, say): try later.
                Err(_) => break,
            }
        }
    }
}

/// Forget a connection's socket before its `TcpStream` closes it (so that a fork in between never
/// makes the child close a descriptor number the parent reused).
fn close_slot(slot: Option<usize>) {
    if let Some(slot) = slot {
        CLIENT_FDS[slot].store(-1, Ordering::Release);
    }
}

/// Advance one ready connection; false when it is done (answered, or failed).
fn step(c: &mut Client) -> bool {
    if c.output.is_none() {
        let mut buf = [0u8; 2048];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    c.last_input = Instant::now();
                    // Keep at most MAX_HEAD + 1 bytes: enough for `route` to see the overflow.
                    let room = (MAX_HEAD + 1).saturating_sub(c.input.len());
                    c.input.extend_from_slice(&buf[..n.min(room)]);
                    if let Some(answer) = route(&c.input) {
                        c.output = Some((respond(answer), 0));
                        c.input = Vec::new();
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
    let Some((out, sent)) = c.output.as_mut() else {
        return true;
    };
    while *sent < out.len() {
        let rest = &out[*sent..];
        // SAFETY: `rest` is a readable slice; send on our own socket; MSG_NOSIGNAL so that a
        // client gone away gives EPIPE rather than a SIGPIPE to the program.
        let n = unsafe {
            libc::send(
                c.stream.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => true,
                io::ErrorKind::Interrupted => continue,
                _ => false,
            };
        }
        *sent += n as usize;
    }
    // All sent: close our side for writing so the client sees the end at once.
    let _ = c.stream.shutdown(std::net::Shutdown::Write);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_the_two_documents_and_refuses_the_rest() {
        let m = Some(Answer::Metrics { head: false });
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), m);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\n\n"), m);
        assert_eq!(route(b"\r\nGET /metrics HTTP/1.1\r\n\r\n"), m);
        assert_eq!(
            route(b"HEAD /stats.json HTTP/1.1\r\nAccept: */*\r\n\r\n"),
            Some(Answer::Json { head: true })
        );
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(route(b"GET /met"), None);
        assert_eq!(route(b""), None);
        let err = Some;
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n").map(status),
            err(405)
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n").map(status), err(404));
        assert_eq!(route(b"GET /../etc HTTP/1.1\r\n\r\n").map(status), err(404));
        assert_eq!(
            route(b"GET /metrics HTTP/2.0\r\n\r\n").map(status),
            err(505)
        );
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 x\r\n\r\n",
            b"G\x00T /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nbad name: x\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nx: \x01\r\n\r\n",
            b"GET /metrics FTP/1.1\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            assert_eq!(route(bad).map(status), err(400), "{bad:?}");
        }
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(route(long.as_bytes()).map(status), err(431));
        let long = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(route(long.as_bytes()).map(status), err(431));
        // Exactly at the limit is still served.
        let mut fit = String::from("GET /metrics HTTP/1.1\r\nX: ");
        fit.push_str(&"a".repeat(MAX_HEAD - fit.len() - 4));
        fit.push_str("\r\n\r\n");
        assert_eq!(fit.len(), MAX_HEAD);
        assert_eq!(route(fit.as_bytes()), m);
    }

    fn status(a: Answer) -> u16 {
        match a {
            Answer::Error(s, _) => s,
            _ => 200,
        }
    }

    #[test]
    fn error_responses_are_short_and_close() {
        let r = String::from_utf8(respond(Answer::Error(405, "Method Not Allowed"))).unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("\r\nAllow: GET, HEAD\r\n"), "{r}");
        assert!(r.contains("\r\nConnection: close\r\n"), "{r}");
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{r}"
        );
    }

    #[test]
    fn addresses_parse_and_bad_ones_say_why() {
        let ok = |s: &str| parse_addr(s).unwrap().to_string();
        assert_eq!(ok("9187"), "127.0.0.1:9187");
        assert_eq!(ok(" localhost:80 "), "127.0.0.1:80");
        assert_eq!(ok("0.0.0.0:9187"), "0.0.0.0:9187");
        assert_eq!(ok("[::1]:9187"), "[::1]:9187");
        assert_eq!(ok("0"), "127.0.0.1:0");
        for (bad, says) in [
            ("", "empty address"),
            (":0x", "port '0x' is not a number"),
            (":80", "empty host"),
            ("1.2.3.4.5:80", "host '1.2.3.4.5' is not an IP address"),
            ("localhost:99999", "port 99999 is out of range"),
            ("host:80", "host 'host' is not an IP address"),
            ("abc", "port 'abc' is not a number"),
            ("127.0.0.1:", "no port after"),
            ("::1:80", "must be in brackets"),
            ("[127.0.0.1]:80", "is not an IP address"),
            ("-1", "is not a number"),
        ] {
            let e = parse_addr(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
