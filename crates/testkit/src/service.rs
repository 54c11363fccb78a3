//! A tcp "service" an attendant's `check = "tcp"` watches, which the test stops and starts.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::wait::{wait_until, DEADLINE};

/// A tcp "service" on a fixed loopback port that accepts connections and closes them: up
/// while started, refusing while stopped, on the same port again after [`restart`]. It
/// stops when dropped.
///
/// [`restart`]: TcpService::restart
pub struct TcpService {
    pub port: u16,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl TcpService {
    /// Starts a service on a free loopback port.
    pub async fn start() -> TcpService {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        let mut s = TcpService { port, running: None };
        s.serve(l);
        s
    }

    /// `127.0.0.1:PORT`, as an attendant's `address` takes it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn serve(&mut self, l: TcpListener) {
        // Dropping the sender (the service dropped) stops the task as sending does.
        let (tx, mut rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    r = l.accept() => if let Ok((mut c, _)) = r {
                        let _ = c.shutdown().await;
                    },
                }
            }
        });
        self.running = Some((tx, task));
    }

    /// Stops listening; returns once the port refuses. Stopping a stopped service does nothing.
    pub async fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            task.await.expect("service task");
        }
    }

    /// Listens again on the same port (retrying while the system still holds it).
    pub async fn restart(&mut self) {
        assert!(self.running.is_none(), "the service on port {} is already running", self.port);
        let port = self.port;
        let l = wait_until(&format!("port {port} to be free to listen on again"), DEADLINE, || async move {
            TcpListener::bind(("127.0.0.1", port)).await
        })
        .await;
        self.serve(l);
    }
}
