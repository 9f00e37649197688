//! HTTP: `/metrics`, `/healthz`, `/readyz` and `/v1/customers/{customer_id}`,
//! beside the pipeline on one listener.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tracing::info;

use crate::event::CustomerId;
use crate::output::profile_message;
use crate::pipeline::Shared;

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    shared: Arc<Shared>,
}

/// The router, separate from the listener so tests can call it directly.
pub fn router(metrics: PrometheusHandle, shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/v1/customers/{customer_id}", get(customer))
        .with_state(AppState { metrics, shared })
}

/// Binds `address` and serves until the process ends; returns the bound address.
pub async fn serve(
    address: SocketAddr,
    metrics: PrometheusHandle,
    shared: Arc<Shared>,
) -> anyhow::Result<SocketAddr> {
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
    let app = router(metrics, shared);
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

async fn customer(State(state): State<AppState>, Path(customer_id): Path<String>) -> Response {
    let id = CustomerId::new(customer_id);
    let tasks = state.shared.tasks();
    match tasks.values().find_map(|task| task.profile(&id)) {
        Some(profile) => Json(profile_message(profile)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "customer not owned by this instance\n",
        )
            .into_response(),
    }
}
