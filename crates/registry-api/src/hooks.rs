//! Extension points for code outside the /v2 API: a hook told about manifest pushes and an
//! interceptor that may answer a request before the API does (pull-through caches).
//!
//! Both run inside the router, after its layers (request ids, logging, authentication), and
//! both are absent by default.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use futures::future::BoxFuture;
use oci_core::Digest;

use crate::AppState;
use crate::route::Route;

/// A manifest stored by a successful `PUT /v2/<name>/manifests/<reference>`.
#[derive(Debug, Clone)]
pub struct PushEvent {
    /// Repository.
    pub repository: String,
    /// The reference of the request path: a tag or a digest.
    pub reference: String,
    /// Digest of the stored manifest.
    pub digest: Digest,
    /// The manifest's subject, when it is a referrer.
    pub subject: Option<Digest>,
}

/// Told about every manifest push after it succeeded. Must not block: queue work instead.
pub trait PushHook: Send + Sync + 'static {
    /// A manifest was stored.
    fn manifest_pushed(&self, event: PushEvent);
}

/// Sees each routed request before the API handles it: returns the request to let the API
/// answer, or a response to answer instead.
pub trait Interceptor: Send + Sync + 'static {
    /// Inspect (and possibly prepare for, or answer) one request.
    fn before<'a>(
        &'a self,
        st: &'a AppState,
        route: &'a Route,
        req: Request,
    ) -> BoxFuture<'a, Result<Request, Response>>;
}

/// The optional hooks of an [`AppState`].
#[derive(Clone, Default)]
pub struct Hooks {
    /// Called after manifest pushes.
    pub push: Option<Arc<dyn PushHook>>,
    /// Called before routed requests.
    pub interceptor: Option<Arc<dyn Interceptor>>,
}
