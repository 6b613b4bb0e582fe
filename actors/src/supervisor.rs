//! The supervisor actor: runs the master's control loops (the scheduler, each controller, each
//! cloud controller) as children, restarts a child that panics, fails or returns, with
//! exponential back-off, and stops them all — waiting until they have stopped — when this
//! master loses the leadership.
//!
//! actix does not catch a panic inside an actor's handler (it would take the arbiter, and the
//! API with it, down), so each child's loop runs as a tokio task owned by this actor: a panic
//! ends only that task, and the actor sees it through the task's `JoinError`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::BoxFuture;
use tokio::sync::watch as signal;
use tokio::task::AbortHandle;

/// The first restart delay of a failing child.
const RESTART_DELAY_BASE: Duration = Duration::from_millis(200);
/// The longest restart delay.
const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long before failing starts its back-off afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How long children get to stop before they are aborted.
pub const STOP_GRACE: Duration = Duration::from_millis(1500);

/// What a child sees to know it must stop.
#[derive(Clone)]
pub struct StopSignal {
    stopped: signal::Receiver<bool>,
}

impl StopSignal {
    /// A signal and the sender that raises it (for tests and for cores run outside the
    /// supervisor).
    pub fn new() -> (signal::Sender<bool>, StopSignal) {
        let (tx, rx) = signal::channel(false);
        (tx, StopSignal { stopped: rx })
    }

    /// Resolves once the child must stop.
    pub async fn stopped(&mut self) {
        let _ = self.stopped.wait_for(|s| *s).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// The underlying receiver (for informers that stop with the children).
    pub fn receiver(&self) -> signal::Receiver<bool> {
        self.stopped.clone()
    }
}

/// How a child's loop is started: called again on every restart.
pub type ChildRun = Arc<dyn Fn(StopSignal) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// One supervised child.
#[derive(Clone)]
pub struct ChildSpec {
    pub name: &'static str,
    pub run: ChildRun,
}

impl ChildSpec {
    pub fn new<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: Fn(StopSignal) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        ChildSpec {
            name,
            run: Arc::new(move |stop| Box::pin(run(stop))),
        }
    }
}

/// How a child's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Returned,
    Failed(String),
    Panicked(String),
    Aborted,
}

struct Child {
    spec: ChildSpec,
    generation: u64,
    failures: u32,
    started: Instant,
    abort: Option<AbortHandle>,
    finished: Option<signal::Receiver<bool>>,
}

/// The delay before restart number `failures` (1-based).
pub fn restart_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    RESTART_DELAY_BASE
        .saturating_mul(1u32 << exponent)
        .min(RESTART_DELAY_MAX)
}

/// The supervisor actor.
pub struct SupervisorActor {
    children: HashMap<&'static str, Child>,
    stop: signal::Sender<bool>,
    running: bool,
    restarts: HashMap<&'static str, u64>,
}

impl Default for SupervisorActor {
    fn default() -> Self {
        let (stop, _) = signal::channel(false);
        SupervisorActor {
            children: HashMap::new(),
            stop,
            running: false,
            restarts: HashMap::new(),
        }
    }
}

impl Actor for SupervisorActor {
    type Context = Context<Self>;
}

impl SupervisorActor {
    fn spawn_child(&mut self, name: &'static str, ctx: &mut Context<Self>) {
        let Some(child) = self.children.get_mut(name) else {
            return;
        };
        child.generation += 1;
        child.started = Instant::now();
        let generation = child.generation;
        let stop = StopSignal {
            stopped: self.stop.subscribe(),
        };
        let inner = tokio::spawn((child.spec.run)(stop));
        child.abort = Some(inner.abort_handle());
        let (finished_tx, finished_rx) = signal::channel(false);
        child.finished = Some(finished_rx);
        let addr = ctx.address();
        tokio::spawn(async move {
            let outcome = match inner.await {
                Ok(Ok(())) => Outcome::Returned,
                Ok(Err(e)) => Outcome::Failed(format!("{e:#}")),
                Err(e) if e.is_panic() => Outcome::Panicked(panic_message(e.into_panic())),
                Err(_) => Outcome::Aborted,
            };
            let _ = finished_tx.send(true);
            addr.do_send(ChildExited {
                name,
                generation,
                outcome,
            });
        });
        tracing::debug!(actor = name, generation, "started");
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Starts (or replaces) the children; they run until [`StopChildren`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartChildren(pub Vec<ChildSpec>);

impl Handler<StartChildren> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: StartChildren, ctx: &mut Context<Self>) {
        let (stop, _) = signal::channel(false);
        self.stop = stop;
        self.running = true;
        for spec in msg.0 {
            let name = spec.name;
            let generation = self.children.get(name).map_or(0, |c| c.generation);
            self.children.insert(
                name,
                Child {
                    spec,
                    generation,
                    failures: 0,
                    started: Instant::now(),
                    abort: None,
                    finished: None,
                },
            );
            self.spawn_child(name, ctx);
        }
    }
}

/// Stops every child and resolves once all have stopped (those that do not within
/// [`STOP_GRACE`] are aborted).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopChildren;

impl Handler<StopChildren> for SupervisorActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: StopChildren, _ctx: &mut Context<Self>) -> Self::Result {
        self.running = false;
        let _ = self.stop.send(true);
        let mut waiting = Vec::new();
        for child in self.children.values_mut() {
            // A child still counts as stopped-by-us even if it returns meanwhile.
            child.generation += 1;
            if let (Some(abort), Some(finished)) = (child.abort.take(), child.finished.take()) {
                waiting.push((child.spec.name, abort, finished));
            }
        }
        Box::pin(async move {
            let all = futures::future::join_all(waiting.iter().map(|(_, _, finished)| {
                let mut finished = finished.clone();
                async move {
                    let _ = finished.wait_for(|f| *f).await;
                }
            }));
            if tokio::time::timeout(STOP_GRACE, all).await.is_err() {
                for (name, abort, finished) in &waiting {
                    if !*finished.borrow() {
                        tracing::warn!(actor = name, "did not stop in time; aborting it");
                        abort.abort();
                    }
                }
                let all = futures::future::join_all(waiting.iter().map(|(_, _, finished)| {
                    let mut finished = finished.clone();
                    async move {
                        let _ = finished.wait_for(|f| *f).await;
                    }
                }));
                let _ = tokio::time::timeout(STOP_GRACE, all).await;
            }
        })
    }
}

/// A child's task ended.
#[derive(Message)]
#[rtype(result = "()")]
struct ChildExited {
    name: &'static str,
    generation: u64,
    outcome: Outcome,
}

impl Handler<ChildExited> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let running = self.running;
        let Some(child) = self.children.get_mut(msg.name) else {
            return;
        };
        if child.generation != msg.generation || !running {
            return;
        }
        if child.started.elapsed() >= HEALTHY_RUN {
            child.failures = 0;
        }
        child.failures = child.failures.saturating_add(1);
        let delay = restart_delay(child.failures);
        *self.restarts.entry(msg.name).or_insert(0) += 1;
        metrics::counter!("keelson_actor_restarts_total", "actor" => msg.name).increment(1);
        match &msg.outcome {
            Outcome::Panicked(message) => tracing::error!(
                actor = msg.name,
                panic = %message,
                restart_in_ms = delay.as_millis() as u64,
                "actor panicked; restarting it"
            ),
            Outcome::Failed(error) => tracing::warn!(
                actor = msg.name,
                %error,
                restart_in_ms = delay.as_millis() as u64,
                "actor failed; restarting it"
            ),
            Outcome::Returned | Outcome::Aborted => tracing::warn!(
                actor = msg.name,
                restart_in_ms = delay.as_millis() as u64,
                "actor ended on its own; restarting it"
            ),
        }
        let name = msg.name;
        let generation = msg.generation;
        ctx.run_later(delay, move |act, ctx| {
            let current = act.children.get(name).map(|c| c.generation);
            if act.running && current == Some(generation) {
                act.spawn_child(name, ctx);
            }
        });
    }
}

/// How often each child has been restarted.
#[derive(Message)]
#[rtype(result = "HashMap<&'static str, u64>")]
pub struct GetRestarts;

impl Handler<GetRestarts> for SupervisorActor {
    type Result = MessageResult<GetRestarts>;

    fn handle(&mut self, _msg: GetRestarts, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.restarts.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn restart_delay_grows_and_is_bounded() {
        assert_eq!(restart_delay(1), RESTART_DELAY_BASE);
        assert_eq!(restart_delay(3), RESTART_DELAY_BASE * 4);
        assert_eq!(restart_delay(50), RESTART_DELAY_MAX);
    }

    #[actix_rt::test]
    async fn a_panicking_child_is_restarted_and_others_keep_running() {
        let supervisor = SupervisorActor::default().start();
        let panics = Arc::new(AtomicU32::new(0));
        let ticks = Arc::new(AtomicU32::new(0));
        let crashing = {
            let panics = panics.clone();
            ChildSpec::new("crashing", move |_stop| {
                let panics = panics.clone();
                async move {
                    panics.fetch_add(1, Ordering::SeqCst);
                    panic!("injected");
                }
            })
        };
        let steady = {
            let ticks = ticks.clone();
            ChildSpec::new("steady", move |mut stop| {
                let ticks = ticks.clone();
                async move {
                    loop {
                        tokio::select! {
                            _ = stop.stopped() => return Ok(()),
                            _ = tokio::time::sleep(Duration::from_millis(10)) => {
                                ticks.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                }
            })
        };
        supervisor
            .send(StartChildren(vec![crashing, steady]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(
            panics.load(Ordering::SeqCst) >= 2,
            "the crashing child was restarted"
        );
        let before = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            ticks.load(Ordering::SeqCst) > before,
            "the steady child runs"
        );
        let restarts = supervisor.send(GetRestarts).await.unwrap();
        assert!(restarts.get("crashing").copied().unwrap_or(0) >= 1);
        assert_eq!(restarts.get("steady"), None);

        supervisor.send(StopChildren).await.unwrap();
        let stopped_at = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            stopped_at,
            "stopped children stay stopped"
        );
        let panicked = panics.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            panics.load(Ordering::SeqCst),
            panicked,
            "no restart after stop"
        );
    }

    #[actix_rt::test]
    async fn a_child_that_ignores_stop_is_aborted() {
        let supervisor = SupervisorActor::default().start();
        let stubborn = ChildSpec::new("stubborn", |_stop| async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
        supervisor
            .send(StartChildren(vec![stubborn]))
            .await
            .unwrap();
        let started = Instant::now();
        supervisor.send(StopChildren).await.unwrap();
        assert!(started.elapsed() < STOP_GRACE * 3);
    }
}
