//! Counting the gRPC calls a server answers with an error, for the
//! `ember_grpc_errors_total` metric of the scheduler and the executors.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{BoxFuture, Service, http};

/// Told the method path (`/ember.v1.SchedulerService/Execute`) of each call
/// answered with an error status.
pub type OnGrpcError = Arc<dyn Fn(&str) + Send + Sync>;

/// A layer for `Server::builder().layer(..)` that reports every call whose
/// response carries a non-OK `grpc-status` in its headers: calls refused or
/// failed before their response began (a stream that fails later reports
/// in its trailers, which this does not read).
#[derive(Clone)]
pub struct CountErrorsLayer(pub OnGrpcError);

impl<S> tower_layer::Layer<S> for CountErrorsLayer {
    type Service = CountErrors<S>;

    fn layer(&self, inner: S) -> CountErrors<S> {
        CountErrors {
            inner,
            on_error: Arc::clone(&self.0),
        }
    }
}

/// The service [`CountErrorsLayer`] wraps around a server's routes.
#[derive(Clone)]
pub struct CountErrors<S> {
    inner: S,
    on_error: OnGrpcError,
}

impl<S, B, R> Service<http::Request<B>> for CountErrors<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_string();
        let on_error = Arc::clone(&self.on_error);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let failed = response
                .headers()
                .get("grpc-status")
                .is_some_and(|code| code.as_bytes() != b"0");
            if failed {
                on_error(&method);
            }
            Ok(response)
        })
    }
}
