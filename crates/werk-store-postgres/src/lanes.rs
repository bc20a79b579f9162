//! Per-node request combining, shared by the batched ACKs (`batch_ack`) and the batched PUSHes
//! (`batch_push`): requests are queued to a fixed number of **lanes** (tasks, each using one
//! pooled connection at a time). A lane that is idle takes a request the moment it arrives,
//! together with whatever else is waiting (up to the batch's limit), so a lone request never
//! waits for company; batches form only from the requests that queued up while every lane was
//! busy committing.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};
use werk_store::StoreError;

/// A request that counts towards a batch's limit by its weight (a PUSH by its jobs).
pub(crate) trait Weighed {
    fn weight(&self) -> usize {
        1
    }
}

/// A node's queue of requests of one kind; the lanes hold its receiving end. Dropping it (with
/// the store) stops the lanes once they have answered what they took.
pub(crate) struct Lanes<P> {
    queue: Option<mpsc::UnboundedSender<P>>,
    /// The receiving end the lanes share (read by [`Lanes::queued`]).
    requests: Option<Arc<Mutex<mpsc::UnboundedReceiver<P>>>>,
}

impl<P: Weighed + Send + 'static> Lanes<P> {
    /// No lanes: the caller applies its request itself.
    pub(crate) fn direct() -> Lanes<P> {
        Lanes {
            queue: None,
            requests: None,
        }
    }

    /// Starts `lanes` lanes (needs a Tokio runtime); each applies batches of at most `max`
    /// weight (a single heavier request is a batch of its own) with `apply`.
    pub(crate) fn start<F, Fut>(lanes: usize, max: usize, what: &'static str, apply: F) -> Lanes<P>
    where
        F: Fn(Vec<P>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (queue, requests) = mpsc::unbounded_channel();
        let requests = Arc::new(Mutex::new(requests));
        for _ in 0..lanes {
            tokio::spawn(lane(requests.clone(), max, what, apply.clone()));
        }
        Lanes {
            queue: Some(queue),
            requests: Some(requests),
        }
    }

    /// Whether requests go to lanes (else the caller applies them directly).
    pub(crate) fn running(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues a request; gives it back when there are no lanes or they are gone.
    pub(crate) fn send(&self, p: P) -> Result<(), P> {
        match &self.queue {
            Some(q) => q.send(p).map_err(|e| e.0),
            None => Err(p),
        }
    }

    /// Queues the request `make` builds around its reply channel and awaits the answer.
    /// `Closed` when the lanes are gone; a request a lane dropped unanswered (its batch
    /// panicked) is an error whose outcome is unknown.
    pub(crate) async fn ask<T>(
        &self,
        what: &str,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> P,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        if self.send(make(reply)).is_err() {
            return Err(StoreError::Closed);
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Backend(format!(
                "the {what} was dropped by its lane (outcome unknown)"
            )))
        })
    }

    /// Requests queued that no lane has taken yet (waits while a lane is taking some).
    pub(crate) async fn queued(&self) -> usize {
        match &self.requests {
            Some(r) => r.lock().await.len(),
            None => 0,
        }
    }
}

/// A lane: takes the next request as soon as it is idle, with whatever else is waiting, and
/// applies them. Ends when the queue's sending end is gone.
async fn lane<P, F, Fut>(
    requests: Arc<Mutex<mpsc::UnboundedReceiver<P>>>,
    max: usize,
    what: &'static str,
    apply: F,
) where
    P: Weighed + Send + 'static,
    F: Fn(Vec<P>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // A request taken from the queue that did not fit in the previous batch.
    let mut carried: Option<P> = None;
    loop {
        let batch = {
            let mut requests = requests.lock().await;
            let first = match carried.take() {
                Some(p) => p,
                None => match requests.recv().await {
                    Some(p) => p,
                    None => return,
                },
            };
            let mut weight = first.weight();
            let mut batch = vec![first];
            while weight < max {
                match requests.try_recv() {
                    Ok(p) if weight + p.weight() > max => {
                        carried = Some(p);
                        break;
                    }
                    Ok(p) => {
                        weight += p.weight();
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        // In a task of its own, so that a panic answers this batch's requests with an error
        // (their reply channels are dropped) and the lane carries on.
        if let Err(e) = tokio::spawn(apply(batch)).await {
            tracing::error!(error = %e, kind = what, "a lane's batch panicked; its requests were answered with an error");
        }
    }
}
