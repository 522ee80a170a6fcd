//! The scrape endpoint across `fork`, in both descriptor-table set-ups of `src/fdtable.rs`: its
//! listening socket is never among the program's descriptors when the server thread has a table of
//! its own; where it shares the program's (`unshare` refused, forced here), a forked child closes
//! the inherited socket in its `pthread_atfork` handler. Either way the child may serve again.
//! One test function: `serve` is once per process.

// Links the SQLite the allocator is installed into.
use libsqlite3_sys as _;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

/// The `socket:[INODE]` link of a listening socket.
fn link_of(l: &TcpListener) -> String {
    let fd = l.as_raw_fd();
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .unwrap()
        .display()
        .to_string()
}

/// The socket inode listening on `port` (state 0A in /proc/net/tcp), as a `socket:[INODE]` link.
fn listening_link(port: u16) -> String {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let inode = tcp
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|f| f[1].ends_with(&format!(":{port:04X}")) && f[3] == "0A")
        .map(|f| f[9].clone())
        .expect("a socket listens on the port");
    format!("socket:[{inode}]")
}

/// What the calling thread's table (shared with the main thread here) holds.
fn program_links() -> Vec<String> {
    std::fs::read_dir("/proc/thread-self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

/// Fork; in the child run `check` and exit 0 when it holds, 1 otherwise; the child's status.
fn in_child(check: impl FnOnce() -> bool) -> i32 {
    // SAFETY: the child runs `check` (reads of /proc, a `serve` call) and leaves with `_exit`;
    // glibc makes malloc usable in the child, and nothing it uses waits on another thread.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or(false);
        // SAFETY: ends the child without running the parent's exit handlers or test harness.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is a valid out pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    libc::WEXITSTATUS(status)
}

/// With the server thread sharing the program's table (forced): the socket is in the program's
/// table, and a forked child closes it and may serve again. `mine_link`: a socket of the
/// program's, which the child keeps.
fn shared_table_case(mine_link: String) {
    sqlalloc::__share_descriptor_table_for_tests();
    let addr = sqlalloc::serve("127.0.0.1:0").unwrap();
    let sock = listening_link(addr.port());
    assert!(
        program_links().contains(&sock),
        "a shared table holds the socket"
    );
    let status = in_child(move || {
        let links = program_links();
        links.contains(&mine_link)
            && !links.contains(&sock)
            && sqlalloc::serve("127.0.0.1:0").is_ok()
    });
    assert_eq!(
        status, 0,
        "the child closed the endpoint's inherited socket and served"
    );
}

#[test]
fn the_endpoint_socket_is_not_the_programs_and_not_a_childs() {
    sqlalloc::install("system").unwrap();
    // A socket of the program's for comparison: it is in the program's table, and a child keeps it.
    let mine = TcpListener::bind("127.0.0.1:0").unwrap();
    let mine_link = link_of(&mine);
    assert!(program_links().contains(&mine_link));
    // A table of its own is the default unless a seccomp profile refuses unshare: probe.
    let own = std::thread::spawn(|| {
        // SAFETY: gives this short-lived thread a copy of the table; touches no memory.
        unsafe { libc::unshare(libc::CLONE_FILES) == 0 }
    })
    .join()
    .unwrap();
    if !own {
        eprintln!(
            "unshare(CLONE_FILES) is refused here: only the shared-table fallback is checked"
        );
        return shared_table_case(mine_link);
    }
    let addr = sqlalloc::serve("127.0.0.1:0").unwrap();
    let sock = listening_link(addr.port());
    assert!(
        !program_links().contains(&sock),
        "the endpoint's socket is among the program's descriptors"
    );
    // The endpoint answers from its own table.
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut c, b"HEAD /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut c, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    // A child has none of its sockets, keeps the program's, and then checks the fallback.
    let status = in_child(move || {
        let links = program_links();
        assert!(links.contains(&mine_link) && !links.contains(&sock));
        shared_table_case(mine_link);
        true
    });
    assert_eq!(status, 0, "see the child's message above");
}
