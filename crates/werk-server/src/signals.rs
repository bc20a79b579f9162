//! Wake-ups for blocked FETCHes: one [`Notify`] per queue name that someone waits on. The store
//! calls [`QueueSignals::enqueued`] after each commit that made a job fetchable; one waiter is
//! woken per job (no thundering herd), and a woken FETCH that finds nothing simply waits again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use werk_store::EnqueueListener;

#[derive(Default)]
pub struct QueueSignals {
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

impl QueueSignals {
    /// The signal of one queue (created on first use).
    pub fn get(&self, queue: &str) -> Arc<Notify> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(queue.to_string()).or_default().clone()
    }

    /// Forgets signals nobody holds (FETCHes for queue names that are no longer asked for).
    pub fn prune(&self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, n| Arc::strong_count(n) > 1);
    }
}

impl EnqueueListener for QueueSignals {
    fn enqueued(&self, queue: &str) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(queue) {
            n.notify_one();
        }
    }

    fn wake_all(&self) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for n in map.values() {
            n.notify_waiters();
        }
    }
}
