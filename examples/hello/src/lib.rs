//! mycel's example app: a `wasi:http/proxy` component.
//!
//! | request            | answer                                                    |
//! |--------------------|-----------------------------------------------------------|
//! | `GET /`            | `hello from mycel: <$GREETING or "hi">\n`                 |
//! | `GET /env/NAME`    | the value of the env var `NAME` and `\n`; 404 when unset  |
//! | `POST /echo`       | the request body, streamed back as it arrives             |
//! | `GET /alloc/N`     | grows the heap by N MiB, touches it, answers `allocated`  |
//! | `GET /trap`        | panics: the component traps                               |
//! | `GET /loop`        | spins forever (CPU-bound), until the host cuts it off     |
//! | `GET /call/HOST/P` | GETs `http://HOST/P` (a dependency: `back.localhost`), answers its status and body; `x-call-micros` says how long that took |
//! | `GET /count`       | adds one to `$DATA_DIR/count` (a volume; `/data` when unset), answers it |
//!
//! Every request logs one line to stdout: `<METHOD> <path>`.
//!
//! For balancing tests and benches, `GET /` can be made slow or failing on one node, known from
//! the `x-mycel-node` header the gateway adds (every replica shares one manifest's env):
//!
//! | env                          | effect on `GET /`                                          |
//! |------------------------------|------------------------------------------------------------|
//! | `DELAY_MS`                   | waits this long before answering                           |
//! | `SLOW_NODE`, `SLOW_MS`       | on the node with that peer id, waits `SLOW_MS` instead     |
//! | `FAIL_NODE`, `FAIL_UNTIL_MS` | on that node, answers 500 until that Unix time (ms)        |

use wstd::http::{Body, Error, Method, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    println!("{method} {path}");

    match (&method, path.as_str()) {
        (&Method::GET, "/") => {
            let node = request
                .headers()
                .get("x-mycel-node")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let on = |var: &str| std::env::var(var).is_ok_and(|n| !n.is_empty() && n == node);
            let number = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok());
            if on("FAIL_NODE") && number("FAIL_UNTIL_MS").is_some_and(|until| now_ms() < until) {
                return Ok(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "failing on purpose\n".to_owned(),
                ));
            }
            let delay = if on("SLOW_NODE") {
                number("SLOW_MS")
            } else {
                number("DELAY_MS")
            };
            if let Some(ms) = delay.filter(|ms| *ms > 0) {
                wstd::task::sleep(wstd::time::Duration::from_millis(ms)).await;
            }
            let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hi".to_owned());
            Ok(text(
                StatusCode::OK,
                format!("hello from mycel: {greeting}\n"),
            ))
        }
        (&Method::GET, p) if p.starts_with("/env/") => match std::env::var(&p[5..]) {
            Ok(value) => Ok(text(StatusCode::OK, format!("{value}\n"))),
            Err(_) => Ok(text(StatusCode::NOT_FOUND, "not set\n".to_owned())),
        },
        (&Method::POST | &Method::PUT, "/echo") => Ok(Response::new(request.into_body())),
        (&Method::GET, p) if p.starts_with("/alloc/") => match p[7..].parse::<usize>() {
            Ok(mib) => Ok(text(StatusCode::OK, allocate(mib))),
            Err(_) => Ok(text(
                StatusCode::BAD_REQUEST,
                "expected /alloc/<MiB>\n".to_owned(),
            )),
        },
        (&Method::GET, p) if p.starts_with("/call/") => {
            let (host, rest) = p[6..].split_once('/').unwrap_or((&p[6..], ""));
            let started = std::time::Instant::now();
            let answer = call(host, rest).await;
            let micros = started.elapsed().as_micros().to_string();
            let mut response = text(StatusCode::OK, answer);
            if let Ok(value) = micros.parse() {
                response.headers_mut().insert("x-call-micros", value);
            }
            Ok(response)
        }
        (&Method::GET, "/count") => match count() {
            Ok(n) => Ok(text(StatusCode::OK, format!("{n}\n"))),
            Err(e) => Ok(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("error: {e}\n"),
            )),
        },
        (&Method::GET, "/trap") => panic!("trap requested"),
        (&Method::GET, "/loop") => spin(),
        _ => Ok(text(StatusCode::NOT_FOUND, "not found\n".to_owned())),
    }
}

/// `GET http://<host>/<path>`: `<status> <body>`, or why it could not be sent.
async fn call(host: &str, path: &str) -> String {
    let request = match Request::get(format!("http://{host}/{path}")).body(()) {
        Ok(request) => request,
        Err(e) => return format!("error: {e}\n"),
    };
    match wstd::http::Client::new().send(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let mut body = response.into_body();
            match body.str_contents().await {
                Ok(text) => format!("{status} {text}"),
                Err(e) => format!("{status} error: {e}\n"),
            }
        }
        Err(e) => format!("error: {e}\n"),
    }
}

/// A counter kept in a file of the app's volume (a directory the host preopened).
fn count() -> std::io::Result<u64> {
    let dir = std::env::var("DATA_DIR").unwrap_or_else(|_| "/data".to_owned());
    let file = format!("{dir}/count");
    let n = match std::fs::read_to_string(&file) {
        Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    } + 1;
    std::fs::write(&file, n.to_string())?;
    Ok(n)
}

/// Milliseconds since the Unix epoch, by the wall clock.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
}

/// Allocates and touches `mib` MiB, so linear memory really grows (a host limit makes this trap).
fn allocate(mib: usize) -> String {
    let mut buffer = vec![0u8; mib << 20];
    for page in buffer.chunks_mut(4096) {
        page[0] = 1;
    }
    let touched: usize = std::hint::black_box(&buffer)
        .iter()
        .step_by(4096)
        .map(|b| *b as usize)
        .sum();
    format!("allocated {mib} MiB ({touched} pages)\n")
}

/// Never returns: a CPU-bound guest that only the host's time limit stops.
fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}
