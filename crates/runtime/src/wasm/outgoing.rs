//! A component's outgoing HTTP requests (`wasi:http/outgoing-handler`). A request to
//! `<dep>.localhost` goes to the node's gateway as a request for app `<dep>`, if the app declared
//! it among its `[dependencies]`; any other `*.localhost` is answered `403 undeclared_dependency`
//! here, so an app reaches only what it declared. Other hosts are sent as wasmtime sends them.

use std::{collections::BTreeSet, future::Future, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks, default_send_request};

/// Where an instance's dependencies are reached: the node's gateway, which routes
/// `<app>.<domain>`, and the apps it may reach.
#[derive(Clone, Debug)]
pub struct DependencyRoutes {
    pub gateway: SocketAddr,
    pub domain: String,
    pub names: BTreeSet<String>,
    /// Kept-alive connections to the gateway, shared by the instance's requests: a request to a
    /// dependency costs no connection setup.
    client: Client<HttpConnector, WasiBody>,
}

impl DependencyRoutes {
    pub fn new(gateway: SocketAddr, domain: String, names: BTreeSet<String>) -> Self {
        DependencyRoutes {
            gateway,
            domain,
            names,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl PartialEq for DependencyRoutes {
    fn eq(&self, other: &Self) -> bool {
        (&self.gateway, &self.domain, &self.names) == (&other.gateway, &other.domain, &other.names)
    }
}

impl Eq for DependencyRoutes {}

/// The hooks of one request's store.
#[derive(Default)]
pub(crate) struct Outgoing {
    pub(crate) routes: Option<Arc<DependencyRoutes>>,
}

type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Outgoing {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        drop(fut);
        let host = request
            .uri()
            .host()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if let Some(name) = host.strip_suffix(".localhost") {
            let routes = self.routes.as_deref().filter(|r| r.names.contains(name));
            let Some(routes) = routes else {
                let answer = forbidden(name);
                let body = request.into_body();
                return Box::new(async move { Ok((answer, drain(body))) });
            };
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            match format!("http://{}{path}", routes.gateway).parse() {
                Ok(uri) => *request.uri_mut() = uri,
                Err(_) => return Box::new(async move { Err(Error::HttpRequestUriInvalid) }),
            }
            if let Ok(value) = format!("{name}.{}", routes.domain).parse() {
                request.headers_mut().insert(http::header::HOST, value);
            }
            let client = routes.client.clone();
            return Box::new(async move {
                let response = client.request(request).await.map_err(|e| {
                    tracing::debug!(error = %e, "a dependency request failed");
                    Error::ConnectionRefused
                })?;
                let response = response.map(|body| {
                    body.map_err(|e| {
                        tracing::debug!(error = %e, "a dependency's answer broke off");
                        Error::HttpResponseIncomplete
                    })
                    .boxed_unsync()
                });
                Ok((response, pending()))
            });
        }
        Box::new(async move {
            let (response, io) = default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

/// The connection task of an answer whose connection the pool drives: none to wait for.
fn pending() -> Box<dyn Future<Output = Result<(), Error>> + Send> {
    Box::new(std::future::pending())
}

/// The connection task of an answer made here: it reads (and drops) the request's body, so the
/// guest's writes to it do not fail, then never finishes, as wasmtime takes a finished task for
/// a connection that ended before its answer's body was read (it is dropped with the answer).
fn drain(body: WasiBody) -> Box<dyn Future<Output = Result<(), Error>> + Send> {
    Box::new(async move {
        let _ = body.collect().await;
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// The answer to a request for an app the component did not declare.
fn forbidden(name: &str) -> http::Response<WasiBody> {
    let body = serde_json::json!({
        "code": "undeclared_dependency",
        "error": format!("'{name}' is not among this app's [dependencies]"),
    })
    .to_string();
    let mut response = http::Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = http::StatusCode::FORBIDDEN;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
