//! mycel's example container app: an HTTP/1.1 server on std alone, one thread per connection.
//!
//! | request          | answer                                                               |
//! |------------------|----------------------------------------------------------------------|
//! | `GET /`          | `hello from a mycel container: <$GREETING or "hi">\n`                |
//! | `GET /env/NAME`  | the value of the env var `NAME` and `\n`; 404 when unset             |
//! | `GET /secret/NAME` | the file `/run/secrets/NAME` (mycel's secrets) and `\n`; else 404 |
//! | `GET /whoami`    | `uid=<uid> readonly_root=<bool> memory_limit=<bytes or "max">\n`     |
//! | `GET /healthz`   | `ok\n`                                                               |
//! | `GET /processes` | how many processes it sees in `/proc`, and `\n`                      |
//! | `GET /alloc/N`   | allocates and touches N MiB (N ≤ 4096), then `allocated <bytes>\n`   |
//! | `GET /count`     | adds one to the counter in `$DATA_DIR/count` (a volume; `/data` when unset), answers it |
//! | `GET /fill/N`    | writes N MiB to `$DATA_DIR/fill-N`: `wrote N MiB\n`, or `error: …\n` (a full volume) |
//! | `POST /echo`     | the request body, streamed back chunk by chunk as it arrives         |
//!
//! With `--tcp` it speaks no HTTP: it is a TCP echo server on `$PORT` that first sends one line,
//! `hello from <$POSTGRES_DB or "tcp"> on port <port>`, then echoes every byte back — the stand-in
//! for a database in tests. `$TCP_PORTS` (comma-separated) adds such echo servers on more ports
//! beside the HTTP one.
//!
//! It listens on `0.0.0.0:$PORT` (8080 when unset) and prints one line per request to stdout
//! (`GET /path`). Connections are kept alive unless the client asks otherwise (or speaks
//! HTTP/1.0 without `Connection: keep-alive`); an idle one is closed after [`IDLE`].

use std::{
    io::{self, BufRead, BufReader, ErrorKind, Read, Write},
    net::{TcpListener, TcpStream},
    time::Duration,
};

/// How long a kept-alive connection may sit idle (or a client may stall mid-request).
const IDLE: Duration = Duration::from_secs(60);
/// Longest request head accepted; a larger one is answered 431 and the connection closed.
const MAX_HEAD: usize = 16 * 1024;
/// Above this a cgroup v1 memory limit means "no limit" (the kernel's unlimited is near 2^63).
const UNLIMITED_V1: u64 = 1 << 62;

/// A TCP echo server on `port`: a greeting line, then every byte back, one thread per connection.
fn echo_server(port: u16) {
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("listening on 0.0.0.0:{port}: {e}");
            return;
        }
    };
    eprintln!("echoing TCP on 0.0.0.0:{port}");
    let name = std::env::var("POSTGRES_DB").unwrap_or_else(|_| "tcp".to_owned());
    for stream in listener.incoming().flatten() {
        let greeting = format!("hello from {name} on port {port}\n");
        std::thread::spawn(move || {
            let _ = echo_bytes(stream, &greeting);
        });
    }
}

fn echo_bytes(mut stream: TcpStream, greeting: &str) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    stream.write_all(greeting.as_bytes())?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        stream.write_all(&buffer[..read])?;
    }
}

fn main() {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(8080);
    let tcp_ports = std::env::var("TCP_PORTS").unwrap_or_default();
    for extra in tcp_ports
        .split(',')
        .filter_map(|p| p.trim().parse::<u16>().ok())
    {
        std::thread::spawn(move || echo_server(extra));
    }
    if std::env::args().nth(1).as_deref() == Some("--tcp") {
        echo_server(port);
        std::process::exit(1);
    }
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("listening on 0.0.0.0:{port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("listening on 0.0.0.0:{port}");
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream) {
                        // A client that goes away or stays silent is routine, not worth a line.
                        if !matches!(
                            e.kind(),
                            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::BrokenPipe
                        ) {
                            eprintln!("connection: {e}");
                        }
                    }
                });
            }
            Err(e) => eprintln!("accepting a connection: {e}"),
        }
    }
}

/// One parsed request head.
struct Head {
    method: String,
    path: String,
    body: BodyKind,
    keep_alive: bool,
}

#[derive(Clone, Copy)]
enum BodyKind {
    Length(u64),
    Chunked,
}

/// Serves the requests of one connection until the client closes it, asks to, or idles.
fn serve(stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let head = match read_head(&mut reader) {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err(HeadError::Io(e)) => return Err(e),
            Err(HeadError::Refused(status, why)) => {
                return respond(&mut writer, status, &format!("{why}\n"), false);
            }
        };
        println!("{} {}", head.method, head.path);
        let keep_alive = head.keep_alive;
        if head.method == "POST" && head.path == "/echo" {
            echo(&mut reader, &mut writer, head.body, keep_alive)?;
        } else {
            // The body must be read past even when unused, or it would be taken for the next head.
            copy_body(&mut reader, head.body, &mut |_| Ok(()))?;
            let (status, text) = route(&head.method, &head.path);
            respond(&mut writer, status, &text, keep_alive)?;
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

fn route(method: &str, path: &str) -> (&'static str, String) {
    const OK: &str = "200 OK";
    const NOT_FOUND: &str = "404 Not Found";
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", "method not allowed\n".to_owned());
    }
    match path {
        "/" => {
            let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hi".to_owned());
            (OK, format!("hello from a mycel container: {greeting}\n"))
        }
        "/healthz" => (OK, "ok\n".to_owned()),
        "/whoami" => (OK, whoami()),
        "/processes" => (OK, format!("{}\n", processes())),
        // A secret's name is a plain file name: nothing that could leave /run/secrets.
        _ if path.starts_with("/secret/") => match &path["/secret/".len()..] {
            name if name.is_empty() || name.contains(['/', '.']) => {
                (NOT_FOUND, "not a secret name\n".to_owned())
            }
            name => match std::fs::read_to_string(format!("/run/secrets/{name}")) {
                Ok(value) => (OK, format!("{value}\n")),
                Err(_) => (NOT_FOUND, "no such secret\n".to_owned()),
            },
        },
        // A counter kept on a volume: read, add one, write back (synced), answer the new count.
        "/count" => match count() {
            Ok(n) => (OK, format!("{n}\n")),
            Err(e) => ("500 Internal Server Error", format!("error: {e}\n")),
        },
        // Writes MiB of data to a file on the volume: "wrote" or the error (a full volume).
        _ if path.starts_with("/fill/") => match path["/fill/".len()..].parse::<usize>() {
            Ok(mib) if mib <= 4096 => match fill(mib) {
                Ok(()) => (OK, format!("wrote {mib} MiB\n")),
                Err(e) => (OK, format!("error: {e}\n")),
            },
            _ => (NOT_FOUND, "not a size in MiB\n".to_owned()),
        },
        _ if path.starts_with("/alloc/") => match path["/alloc/".len()..].parse::<usize>() {
            Ok(mib) if mib <= 4096 => (OK, format!("allocated {}\n", allocate(mib))),
            _ => (NOT_FOUND, "not a size in MiB\n".to_owned()),
        },
        _ => match path.strip_prefix("/env/").map(std::env::var) {
            Some(Ok(value)) => (OK, format!("{value}\n")),
            Some(Err(_)) => (NOT_FOUND, "not set\n".to_owned()),
            None => (NOT_FOUND, "not found\n".to_owned()),
        },
    }
}

/// Where the app keeps its data: `$DATA_DIR`, else `/data`.
fn data_dir() -> std::path::PathBuf {
    std::env::var_os("DATA_DIR").map_or_else(|| "/data".into(), Into::into)
}

fn count() -> io::Result<u64> {
    let file = data_dir().join("count");
    let n = match std::fs::read_to_string(&file) {
        Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    } + 1;
    let part = data_dir().join("count.part");
    let mut out = std::fs::File::create(&part)?;
    out.write_all(n.to_string().as_bytes())?;
    out.sync_all()?;
    std::fs::rename(part, file)?;
    Ok(n)
}

fn fill(mib: usize) -> io::Result<()> {
    let mut out = std::fs::File::create(data_dir().join(format!("fill-{mib}")))?;
    let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    for _ in 0..mib {
        out.write_all(&block)?;
    }
    out.sync_all()
}

/// Why no request head could be read.
enum HeadError {
    Io(io::Error),
    /// The head is unacceptable: answer with this status and reason, then close.
    Refused(&'static str, &'static str),
}

impl From<io::Error> for HeadError {
    fn from(e: io::Error) -> Self {
        HeadError::Io(e)
    }
}

const BAD_REQUEST: &str = "400 Bad Request";
const TOO_LARGE: &str = "431 Request Header Fields Too Large";

/// Reads a request head; `None` when the client closed the connection between requests.
fn read_head(reader: &mut impl BufRead) -> Result<Option<Head>, HeadError> {
    let mut line = String::new();
    let mut read = 0;
    // Tolerate empty lines before a request line (RFC 9112, 2.2).
    loop {
        line.clear();
        let n = reader.take(MAX_HEAD as u64).read_line(&mut line)?;
        if n == 0 {
            return Ok(None);
        }
        if !line.ends_with('\n') {
            return Err(HeadError::Refused(TOO_LARGE, "request line too long"));
        }
        read += n;
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Refused(BAD_REQUEST, "malformed request line"));
    };
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let method = method.to_owned();
    let http10 = version == "HTTP/1.0";
    let mut keep_alive = !http10;
    let mut body = BodyKind::Length(0);
    loop {
        line.clear();
        let n = reader
            .take((MAX_HEAD - read.min(MAX_HEAD)) as u64)
            .read_line(&mut line)?;
        read += n;
        if !line.ends_with('\n') {
            return Err(if read >= MAX_HEAD {
                HeadError::Refused(TOO_LARGE, "request head too large")
            } else {
                HeadError::Io(invalid("connection closed inside the request head"))
            });
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(HeadError::Refused(BAD_REQUEST, "malformed header line"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let length = value
                    .parse()
                    .map_err(|_| HeadError::Refused(BAD_REQUEST, "malformed Content-Length"))?;
                body = BodyKind::Length(length);
            }
            "transfer-encoding" if value.to_ascii_lowercase().ends_with("chunked") => {
                body = BodyKind::Chunked;
            }
            "connection" => {
                let value = value.to_ascii_lowercase();
                if value.split(',').any(|t| t.trim() == "close") {
                    keep_alive = false;
                } else if http10 && value.split(',').any(|t| t.trim() == "keep-alive") {
                    keep_alive = true;
                }
            }
            _ => {}
        }
    }
    Ok(Some(Head {
        method,
        path,
        body,
        keep_alive,
    }))
}

/// Reads a request body, handing each piece to `sink` as it arrives.
fn copy_body(
    reader: &mut impl BufRead,
    kind: BodyKind,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    if let BodyKind::Length(length) = kind {
        return copy_exact(reader, length, sink);
    }
    loop {
        let mut size_line = String::new();
        reader.take(1024).read_line(&mut size_line)?;
        let size = size_line.trim().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size, 16).map_err(|_| invalid("malformed chunk size"))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                let mut trailer = String::new();
                if reader.take(MAX_HEAD as u64).read_line(&mut trailer)? == 0
                    || trailer.trim().is_empty()
                {
                    return Ok(());
                }
            }
        }
        copy_exact(reader, size, sink)?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// Reads exactly `length` bytes of body, handing each piece to `sink`.
fn copy_exact(
    reader: &mut impl BufRead,
    mut length: u64,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buffer = [0u8; 8192];
    while length > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(length).unwrap_or(usize::MAX));
        let read = reader.read(&mut buffer[..want])?;
        if read == 0 {
            return Err(invalid("connection closed inside the request body"));
        }
        sink(&buffer[..read])?;
        length -= read as u64;
    }
    Ok(())
}

/// Answers with the request body as it arrives: the head first, then one chunk per read.
fn echo(
    reader: &mut impl BufRead,
    writer: &mut TcpStream,
    body: BodyKind,
    keep_alive: bool,
) -> io::Result<()> {
    write!(
        writer,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\n{}\r\n",
        connection_header(keep_alive)
    )?;
    writer.flush()?;
    copy_body(reader, body, &mut |piece| {
        write!(writer, "{:x}\r\n", piece.len())?;
        writer.write_all(piece)?;
        writer.write_all(b"\r\n")?;
        writer.flush()
    })?;
    writer.write_all(b"0\r\n\r\n")?;
    writer.flush()
}

fn respond(writer: &mut impl Write, status: &str, body: &str, keep_alive: bool) -> io::Result<()> {
    write!(
        writer,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n{}\r\n{body}",
        body.len(),
        connection_header(keep_alive)
    )?;
    writer.flush()
}

fn connection_header(keep_alive: bool) -> &'static str {
    if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    }
}

/// What the process sees of its own confinement, so tests can check it from inside.
/// How many processes this one can see: its own PID namespace's, when it has one.
fn processes() -> usize {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0)
}

/// Allocates `mib` MiB and touches every page of it, so it counts against a memory limit;
/// answers the bytes held, then frees them.
fn allocate(mib: usize) -> usize {
    let mut held = vec![0u8; mib << 20];
    for page in held.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&held)
        .iter()
        .step_by(4096)
        .map(|b| *b as usize)
        .sum::<usize>()
        * 4096
}

fn whoami() -> String {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let ids = line.strip_prefix("Uid:")?;
                ids.split_whitespace().nth(1).map(str::to_owned)
            })
        })
        .unwrap_or_else(|| "unknown".to_owned());
    // A read-only mount refuses before permissions are checked, so even a user who may not
    // write to `/` sees EROFS there rather than EACCES.
    let probe = "/.mycel-write-probe";
    let readonly_root = match std::fs::File::create(probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(probe);
            false
        }
        Err(e) => e.kind() == ErrorKind::ReadOnlyFilesystem,
    };
    format!(
        "uid={uid} readonly_root={readonly_root} memory_limit={}\n",
        memory_limit()
    )
}

/// The cgroup's memory limit: cgroup v2's `memory.max`, else cgroup v1's `limit_in_bytes`.
fn memory_limit() -> String {
    if let Ok(max) = std::fs::read_to_string("/sys/fs/cgroup/memory.max") {
        return max.trim().to_owned();
    }
    match std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes")
        .ok()
        .and_then(|v1| v1.trim().parse::<u64>().ok())
    {
        Some(bytes) if bytes < UNLIMITED_V1 => bytes.to_string(),
        _ => "max".to_owned(),
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what.to_owned())
}
