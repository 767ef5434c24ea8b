//! The one thread that owns the model: it takes completion requests and adapter loads and
//! unloads from a queue, batches requests that arrive close together (bounded wait, bounded
//! batch) across adapters, and runs each batch as one mixed-adapter generation.
//!
//! Loads and unloads go through the same queue, in arrival order, so they never race a
//! batch: a request that arrived before an unload still runs with its adapter.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use peft_core::Conditioning;
use peft_decoder::Decoder;
use peft_gpt2::{GenerationConfig, MixedRow, RowFlow, Sampling, generate_mixed_streaming};
use tokio::sync::oneshot;

use crate::registry::{AdapterInfo, Registry, RegistryError};

/// How requests are grouped into batches.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Most rows in one generation.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others.
    pub max_wait: Duration,
}

/// One completion to run.
#[derive(Clone, Debug)]
pub struct CompletionJob {
    /// The adapter's name, or the base model's.
    pub model: String,
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub seed: u64,
}

/// What the model thread tells a request, in order: each token as soon as it is chosen (the
/// end-of-text token included), then how the generation ended. A request that stops listening
/// (its receiver dropped: a stop string appeared, or a streaming client left) is stopped at its
/// next token, so its row stops costing the batch.
#[derive(Debug)]
pub enum CompletionEvent {
    Token(u32),
    Done(Result<(), EngineError>),
}

pub type CompletionEvents = tokio::sync::mpsc::UnboundedReceiver<CompletionEvent>;
type EventSender = tokio::sync::mpsc::UnboundedSender<CompletionEvent>;

#[derive(Clone, Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Input(String),
    #[error("the model worker has stopped")]
    Stopped,
    /// The model's code panicked on this request's batch (a backend's own check, a GPU out of
    /// memory): the batch's requests fail, and the worker goes on with the next.
    #[error("internal error while generating: {0}")]
    Internal(String),
}

enum Job {
    Complete(CompletionJob, EventSender),
    Load(
        String,
        std::path::PathBuf,
        oneshot::Sender<Result<AdapterInfo, EngineError>>,
    ),
    Unload(String, oneshot::Sender<Result<AdapterInfo, EngineError>>),
}

/// The handle HTTP handlers use; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    queue: Sender<Job>,
    /// What is loaded, for listings that should not wait behind a running batch. The worker
    /// updates it after each load and unload; the worker's registry is the truth.
    loaded: Arc<RwLock<Vec<AdapterInfo>>>,
    pub base_name: String,
    /// Most positions one request may use: the model's, or fewer (see
    /// [`Engine::limit_context`]).
    pub max_context: usize,
    /// The end-of-text token, which ends a row.
    pub eos_id: u32,
}

impl Engine {
    /// Starts the worker thread that owns `model` and `registry`.
    pub fn start(
        model: impl Decoder + Send + 'static,
        registry: Registry,
        eos_id: u32,
        limits: BatchLimits,
    ) -> Self {
        let (queue, jobs) = channel();
        let loaded = Arc::new(RwLock::new(registry.infos()));
        let engine = Self {
            queue,
            loaded: loaded.clone(),
            base_name: registry.base_name().to_string(),
            max_context: model.n_positions(),
            eos_id,
        };
        std::thread::Builder::new()
            .name("peft-serve-model".into())
            .spawn(move || {
                Worker {
                    model,
                    registry,
                    eos_id,
                    limits,
                    loaded,
                }
                .run(jobs)
            })
            .expect("spawning the model thread");
        engine
    }

    /// Lowers the positions one request may use (prompt, virtual tokens and new tokens) below
    /// the model's: attention's memory grows with their square, so a model of tens of
    /// thousands of positions would let one request take more than the machine has.
    pub fn limit_context(&mut self, positions: usize) {
        self.max_context = self.max_context.min(positions);
    }

    pub fn adapters(&self) -> Vec<AdapterInfo> {
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Virtual tokens a request naming `model` adds (0 for the base), if it is loaded.
    pub fn virtual_tokens(&self, model: &str) -> Option<usize> {
        if model == self.base_name {
            return Some(0);
        }
        self.adapters()
            .into_iter()
            .find(|a| a.name == model)
            .map(|a| a.num_virtual_tokens)
    }

    /// Queues a completion; its tokens and its end arrive on the returned receiver.
    pub fn complete(&self, job: CompletionJob) -> Result<CompletionEvents, EngineError> {
        let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
        self.queue
            .send(Job::Complete(job, events))
            .map_err(|_| EngineError::Stopped)?;
        Ok(receiver)
    }

    pub async fn load(
        &self,
        name: String,
        path: std::path::PathBuf,
    ) -> Result<AdapterInfo, EngineError> {
        self.ask(|reply| Job::Load(name, path, reply)).await
    }

    pub async fn unload(&self, name: String) -> Result<AdapterInfo, EngineError> {
        self.ask(|reply| Job::Unload(name, reply)).await
    }

    async fn ask<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Job,
    ) -> Result<T, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(job(reply))
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }
}

/// A request admitted to a batch: its adapter resolved when it was taken off the queue.
struct Admitted {
    job: CompletionJob,
    conditioning: Conditioning,
    events: EventSender,
    /// Told its end already: it had all its tokens while others of its batch go on.
    ended: std::cell::Cell<bool>,
}

/// The model thread: `D` is the base model, of any family.
struct Worker<D> {
    model: D,
    registry: Registry,
    eos_id: u32,
    limits: BatchLimits,
    loaded: Arc<RwLock<Vec<AdapterInfo>>>,
}

impl<D: Decoder> Worker<D> {
    fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut batch = Vec::new();
            self.take(first, &mut batch);
            let deadline = Instant::now() + self.limits.max_wait;
            while batch.len() < self.limits.max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                match jobs.recv_timeout(left) {
                    Ok(job) => self.take(job, &mut batch),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            for group in group_compatible(batch) {
                self.run_group_guarded(group);
            }
        }
    }

    /// Applies loads and unloads at once (in arrival order); admits completions with their
    /// adapter resolved now, so a later unload cannot pull it from under them.
    fn take(&mut self, job: Job, batch: &mut Vec<Admitted>) {
        match job {
            Job::Complete(job, events) => match self.registry.conditioning(&job.model) {
                Ok(conditioning) => batch.push(Admitted {
                    job,
                    conditioning,
                    events,
                    ended: std::cell::Cell::new(false),
                }),
                Err(err) => {
                    let _ = events.send(CompletionEvent::Done(Err(err.into())));
                }
            },
            Job::Load(name, path, reply) => {
                let load = || self.registry.load(&name, &path).map_err(Into::into);
                let result =
                    guarded(load).unwrap_or_else(|panic| Err(EngineError::Internal(panic)));
                self.publish();
                let _ = reply.send(result);
            }
            Job::Unload(name, reply) => {
                let result = self.registry.unload(&name).map_err(Into::into);
                self.publish();
                let _ = reply.send(result);
            }
        }
    }

    fn publish(&self) {
        *self
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = self.registry.infos();
    }

    /// [`Self::run_group`], with a panic in the model's code failing the group's requests
    /// instead of ending the one thread that every later request needs.
    fn run_group_guarded(&self, group: Vec<Admitted>) {
        let rows: Vec<&Admitted> = group.iter().collect();
        if let Err(panic) = guarded(|| self.run_group(&rows)) {
            finish(&rows, &Err(EngineError::Internal(panic)));
        }
    }

    /// One mixed-adapter generation for the group; if the rows cannot share a batch (their
    /// lengths together exceed the model), each runs alone instead.
    fn run_group(&self, rows: &[&Admitted]) {
        let refused = |(err, _sent): (String, usize)| EngineError::Input(err);
        match self.stream_rows(rows) {
            // The batch was refused before any token went out: no row has seen anything yet.
            Err((_, 0)) if rows.len() > 1 => {
                for row in rows {
                    let alone = std::slice::from_ref(row);
                    finish(alone, &self.stream_rows(alone).map_err(refused));
                }
            }
            result => finish(rows, &result.map_err(refused)),
        }
    }

    /// Generates for `rows` in one batch, sending each token to its request as it is chosen.
    /// A row stops when it has its `max_tokens` — its request is told it ended then, not
    /// when the batch's longest row ends — or when its request stopped listening. On error,
    /// also says how many tokens had been sent.
    fn stream_rows(&self, rows: &[&Admitted]) -> Result<(), (String, usize)> {
        let lead = &rows[0].job;
        let config = GenerationConfig {
            max_new_tokens: rows.iter().map(|r| r.job.max_tokens).max().unwrap_or(0),
            sampling: lead.sampling,
            seed: lead.seed,
            eos_id: Some(self.eos_id),
            pad_id: self.eos_id,
            use_cache: true,
        };
        let mixed: Vec<MixedRow<'_>> = rows
            .iter()
            .map(|r| MixedRow {
                tokens: &r.job.prompt,
                conditioning: &r.conditioning,
            })
            .collect();
        let mut sent = vec![0usize; rows.len()];
        generate_mixed_streaming(&self.model, &mixed, &config, |row, token| {
            sent[row] += 1;
            let listening = rows[row].events.send(CompletionEvent::Token(token)).is_ok();
            if !listening {
                return RowFlow::Stop;
            }
            if sent[row] < rows[row].job.max_tokens {
                return RowFlow::Continue;
            }
            finish(&rows[row..=row], &Ok(()));
            RowFlow::Stop
        })
        .map(drop)
        .map_err(|err| (err.to_string(), sent.iter().sum()))
    }
}

/// Runs `work`, turning a panic into its message. (The default hook has printed it, with its
/// place, to standard error already.) Nothing the worker keeps is left half-changed by one:
/// a generation's state is its own, and a load changes the registry only once it succeeded.
fn guarded<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the model panicked".to_string())
    })
}

/// Tells each row's request that was not told yet how its generation ended.
fn finish(rows: &[&Admitted], result: &Result<(), EngineError>) {
    for row in rows.iter().filter(|row| !row.ended.replace(true)) {
        let _ = row.events.send(CompletionEvent::Done(result.clone()));
    }
}

/// Splits admitted requests into groups that one generation can serve: greedy requests all
/// together (a row's tokens depend neither on the other rows nor on how many tokens they ask
/// for), and each sampled request alone, so that its seed gives the text it gives on its own
/// (rows of one batch draw from one random stream).
fn group_compatible(batch: Vec<Admitted>) -> Vec<Vec<Admitted>> {
    let (greedy, sampled): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|a| a.job.sampling == Sampling::Greedy);
    let mut groups: Vec<Vec<Admitted>> = sampled.into_iter().map(|a| vec![a]).collect();
    if !greedy.is_empty() {
        groups.insert(0, greedy);
    }
    groups
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use peft_core::ModelShape;
    use peft_decoder::{ForwardInput, KvCache};

    use super::*;

    /// A model whose forward pass panics on its first `panics` calls, as a backend's own
    /// assertion or a GPU out of memory would, and then answers; with a `gate`, every forward
    /// pass after the first waits for a message on it.
    #[derive(Default)]
    struct Flaky {
        panics: std::cell::Cell<usize>,
        gate: Option<std::sync::mpsc::Receiver<()>>,
        forwards: std::cell::Cell<usize>,
    }

    impl Decoder for Flaky {
        fn n_positions(&self) -> usize {
            16
        }
        fn n_layer(&self) -> usize {
            1
        }
        fn device(&self) -> Device {
            Device::flex()
        }
        fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
            let [batch, len] = ids.dims();
            Tensor::zeros([batch, len, 4], &self.device())
        }
        fn forward(&self, input: ForwardInput<'_>, _: Option<&mut KvCache>) -> Tensor<3> {
            if self.panics.get() > 0 {
                self.panics.set(self.panics.get() - 1);
                panic!("out of memory");
            }
            self.forwards.set(self.forwards.get() + 1);
            if let Some(gate) = &self.gate
                && self.forwards.get() > 1
            {
                let _ = gate.recv();
            }
            input.embeddings
        }
        fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
            hidden
        }
        fn token_embeddings(&self) -> Tensor<2> {
            Tensor::zeros([4, 4], &self.device())
        }
        fn output_embeddings(&self) -> Tensor<2> {
            self.token_embeddings()
        }
    }

    fn job(max_tokens: usize) -> CompletionJob {
        CompletionJob {
            model: "base".into(),
            prompt: vec![1, 2],
            max_tokens,
            sampling: Sampling::Greedy,
            seed: 0,
        }
    }

    fn start(model: Flaky) -> Engine {
        let shape = ModelShape {
            d_model: 4,
            n_layer: 1,
            n_head: 1,
        };
        Engine::start(
            model,
            Registry::new("base", shape, Device::flex()),
            3,
            BatchLimits {
                max_batch: 4,
                max_wait: Duration::from_millis(200),
            },
        )
    }

    /// Every event of one completion, up to its end.
    fn events(mut receiver: CompletionEvents) -> Vec<CompletionEvent> {
        let mut events = Vec::new();
        while let Some(event) = receiver.blocking_recv() {
            let done = matches!(event, CompletionEvent::Done(_));
            events.push(event);
            if done {
                break;
            }
        }
        events
    }

    #[test]
    fn a_panic_in_the_model_fails_its_batch_and_the_next_request_is_served() {
        let engine = start(Flaky {
            panics: std::cell::Cell::new(1),
            ..Flaky::default()
        });
        let failed = events(engine.complete(job(2)).unwrap());
        assert!(
            matches!(&failed[..], [CompletionEvent::Done(Err(EngineError::Internal(m)))] if m == "out of memory"),
            "{failed:?}"
        );
        let served = events(engine.complete(job(2)).unwrap());
        assert!(
            matches!(
                &served[..],
                [
                    CompletionEvent::Token(_),
                    CompletionEvent::Token(_),
                    CompletionEvent::Done(Ok(()))
                ]
            ),
            "{served:?}"
        );
    }

    /// A request that has its `max_tokens` ends then, while a longer one of its batch goes on
    /// (it used to hear of its end only with the batch's).
    #[test]
    fn a_request_with_all_its_tokens_ends_before_its_batch_does() {
        let (open, gate) = std::sync::mpsc::channel();
        let engine = start(Flaky {
            gate: Some(gate),
            ..Flaky::default()
        });
        let short = engine.complete(job(1)).unwrap();
        let long = engine.complete(job(3)).unwrap();
        // Held at its second forward pass, the batch cannot end before the gate opens; if
        // the short request waits for the batch, the gate opens after a while anyway.
        let opened_late = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = {
            let (open, opened_late) = (open.clone(), opened_late.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(10));
                opened_late.store(true, std::sync::atomic::Ordering::SeqCst);
                for _ in 0..2 {
                    let _ = open.send(());
                }
            })
        };
        let ended = events(short);
        assert!(
            matches!(
                &ended[..],
                [CompletionEvent::Token(_), CompletionEvent::Done(Ok(()))]
            ),
            "{ended:?}"
        );
        assert!(
            !opened_late.load(std::sync::atomic::Ordering::SeqCst),
            "the short request ended only with its batch"
        );
        for _ in 0..2 {
            open.send(()).unwrap();
        }
        let finished = events(long);
        assert_eq!(finished.len(), 4, "{finished:?}");
        assert!(matches!(finished[3], CompletionEvent::Done(Ok(()))));
        drop(watchdog);
    }
}
