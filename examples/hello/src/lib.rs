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
//!
//! Every request logs one line to stdout: `<METHOD> <path>`.

use wstd::http::{Body, Error, Method, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    println!("{method} {path}");

    match (&method, path.as_str()) {
        (&Method::GET, "/") => {
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
        (&Method::GET, "/trap") => panic!("trap requested"),
        (&Method::GET, "/loop") => spin(),
        _ => Ok(text(StatusCode::NOT_FOUND, "not found\n".to_owned())),
    }
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
