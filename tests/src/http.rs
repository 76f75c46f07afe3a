//! A host served over real HTTP on 127.0.0.1, and a client for it.

use std::net::SocketAddr;
use std::sync::Arc;

use picloud_host::TriggerHost;
use picloud_host::store::Store;
use tokio_util::sync::CancellationToken;

/// A host's API and dispatcher, running until dropped.
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The host behind it.
    pub host: TriggerHost,
    stop: CancellationToken,
}

impl Served {
    /// Serve `host` (its dispatcher too) on a free port of 127.0.0.1.
    pub async fn start(host: TriggerHost) -> Served {
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        tokio::spawn(picloud_host::http::serve(
            host.clone(),
            addr,
            stop.clone(),
            move |a| {
                let _ = tx.send(a);
            },
        ));
        host.spawn(stop.clone());
        let bound = rx.await.expect("the API did not start");
        Served {
            base: format!("http://{bound}"),
            host,
            stop,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A token for `principal`, made through the library.
pub async fn token(store: &Arc<dyn Store>, principal: &str) -> String {
    picloud_host::tokens::create(&**store, principal, "test")
        .await
        .expect("creating a token")
        .1
}
