//! HTTP: `/metrics`, `/healthz`, `/readyz` and `/v1/customers/{customer_id}`,
//! beside the pipeline on one listener. Probes and scrapers need no
//! credentials; the profile API, which shows customer data, needs the bearer
//! token of `http.api_token`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tracing::info;

use crate::config::{Config, Secret};
use crate::event::CustomerId;
use crate::output::profile_json;
use crate::pipeline::Shared;

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    shared: Arc<Shared>,
    api_token: Arc<Secret>,
    stall_timeout: Duration,
}

/// The router, separate from the listener so tests can call it directly.
pub fn router(metrics: PrometheusHandle, shared: Arc<Shared>, config: &Config) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(live))
        .route("/readyz", get(ready))
        .route("/v1/customers/{customer_id}", get(customer))
        .with_state(AppState {
            metrics,
            shared,
            api_token: Arc::new(config.http.api_token.clone()),
            stall_timeout: config.processing.stall_timeout,
        })
}

/// Binds `http.listen` and serves until the process ends; returns the bound address.
pub async fn serve(
    config: &Config,
    metrics: PrometheusHandle,
    shared: Arc<Shared>,
) -> anyhow::Result<SocketAddr> {
    let address = config.http.listen;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {address} (http.listen): {error}"))?;
    let bound = listener.local_addr()?;
    // Histogram and summary upkeep; the exporter does it only for its own server.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(5));
        loop {
            interval.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = router(metrics, shared, config);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "HTTP server stopped");
        }
    });
    info!(%bound, "serving /metrics, /healthz, /readyz, /v1/customers/{{id}}");
    Ok(bound)
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Liveness: fails once the processing loop has been silent for `processing.stall_timeout`.
async fn live(State(state): State<AppState>) -> Response {
    match state.shared.heartbeat.silence() {
        Some(silence) if silence > state.stall_timeout => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stalled: the processing loop made no progress for {}s (processing.stall_timeout {}s)\n",
                silence.as_secs(),
                state.stall_timeout.as_secs()
            ),
        )
            .into_response(),
        _ => (StatusCode::OK, "ok\n").into_response(),
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.shared.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for partition assignment\n",
        )
            .into_response()
    }
}

async fn customer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(customer_id): Path<String>,
) -> Response {
    if let Some(refusal) = refusal(&state.api_token, &headers) {
        return refusal;
    }
    let id = CustomerId::new(customer_id);
    let tasks = state.shared.tasks();
    match tasks.values().find_map(|task| task.profile(&id)) {
        Some(profile) => (
            [(header::CONTENT_TYPE, "application/json")],
            profile_json(profile),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "customer not owned by this instance\n",
        )
            .into_response(),
    }
}

/// Checks `Authorization: Bearer <http.api_token>`: a 401 saying what is wrong, or none.
fn refusal(token: &Secret, headers: &HeaderMap) -> Option<Response> {
    let refuse = |reason: &str| {
        Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"cxpulse\"")],
                format!("{reason}\n"),
            )
                .into_response(),
        )
    };
    if token.is_empty() {
        return refuse("the profile API is off: no http.api_token is configured");
    }
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        return refuse("missing `Authorization: Bearer <token>` (http.api_token)");
    };
    if !token.matches(given.trim().as_bytes()) {
        return refuse("wrong bearer token");
    }
    None
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    fn app(token: &str, stall_timeout: Duration) -> (Router, Arc<Shared>) {
        let mut config = Config::default();
        config.http.api_token = Secret::from(token.to_string());
        config.processing.stall_timeout = stall_timeout;
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let shared = Arc::new(Shared::default());
        (router(recorder.handle(), shared.clone(), &config), shared)
    }

    async fn status(app: &Router, path: &str, authorization: Option<&str>) -> StatusCode {
        let mut request = Request::get(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("response");
        response.status()
    }

    #[tokio::test]
    async fn the_profile_api_needs_the_bearer_token_and_probes_do_not() {
        let (app, _) = app("s3cr3t", Duration::from_secs(60));
        let path = "/v1/customers/c1";
        assert_eq!(status(&app, path, None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(&app, path, Some("Bearer wrong")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&app, path, Some("Bearer s3cr3t0")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&app, path, Some("Basic s3cr3t")).await,
            StatusCode::UNAUTHORIZED
        );
        // Authorized: the customer is simply not owned here.
        assert_eq!(
            status(&app, path, Some("Bearer s3cr3t")).await,
            StatusCode::NOT_FOUND
        );
        for open in ["/metrics", "/healthz"] {
            assert_eq!(status(&app, open, None).await, StatusCode::OK, "{open}");
        }
        assert_eq!(
            status(&app, "/readyz", None).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn without_a_configured_token_the_profile_api_refuses_everyone() {
        let (app, _) = app("", Duration::from_secs(60));
        assert_eq!(
            status(&app, "/v1/customers/c1", Some("Bearer ")).await,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn liveness_fails_once_the_loop_is_silent_for_the_stall_timeout() {
        let (app, shared) = app("t", Duration::from_millis(200));
        // Before the loop runs (start-up, first restore): alive.
        assert_eq!(status(&app, "/healthz", None).await, StatusCode::OK);
        shared.heartbeat.beat();
        assert_eq!(status(&app, "/healthz", None).await, StatusCode::OK);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            status(&app, "/healthz", None).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        shared.heartbeat.beat();
        assert_eq!(status(&app, "/healthz", None).await, StatusCode::OK);
    }
}
