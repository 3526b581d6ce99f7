//! A relay to PostgreSQL on 127.0.0.1:5432 that a test cuts (every connection dropped, new
//! ones refused) and restores: a database outage without touching the database server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

/// A relay to PostgreSQL on 127.0.0.1:5432 that can be cut (every connection dropped, new
/// ones refused) and restored.
pub struct Relay {
    pub port: u16,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (d, c) = (down.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if d.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(h);
            }
        });
        Relay { port, down, conns, accept }
    }
    /// A new, empty PostgreSQL schema and its URL through this relay (drop the schema with
    /// `drover_store::testing::drop_schema` when done).
    pub async fn fresh_schema(&self) -> (String, String) {
        let (store, schema) = drover_store::testing::pg_schema_store().await.expect("PostgreSQL on 127.0.0.1:5432");
        drop(store);
        let url = drover_store::testing::pg_schema_url(&schema)
            .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port));
        (schema, url)
    }
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
