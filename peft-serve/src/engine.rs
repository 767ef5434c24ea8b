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
use peft_gpt2::{GenerationConfig, Gpt2, MixedRow, Sampling, generate_mixed};
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub tokens: Vec<u32>,
    /// The row produced the end-of-text token.
    pub stopped: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Input(String),
    #[error("the model worker has stopped")]
    Stopped,
}

enum Job {
    Complete(
        CompletionJob,
        oneshot::Sender<Result<Completion, EngineError>>,
    ),
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
    pub n_positions: usize,
}

impl Engine {
    /// Starts the worker thread that owns `model` and `registry`.
    pub fn start(model: Gpt2, registry: Registry, eos_id: u32, limits: BatchLimits) -> Self {
        let (queue, jobs) = channel();
        let loaded = Arc::new(RwLock::new(registry.infos()));
        let engine = Self {
            queue,
            loaded: loaded.clone(),
            base_name: registry.base_name().to_string(),
            n_positions: model.n_positions(),
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

    pub async fn complete(&self, job: CompletionJob) -> Result<Completion, EngineError> {
        self.ask(|reply| Job::Complete(job, reply)).await
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
    reply: oneshot::Sender<Result<Completion, EngineError>>,
}

struct Worker {
    model: Gpt2,
    registry: Registry,
    eos_id: u32,
    limits: BatchLimits,
    loaded: Arc<RwLock<Vec<AdapterInfo>>>,
}

impl Worker {
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
                self.run_group(group);
            }
        }
    }

    /// Applies loads and unloads at once (in arrival order); admits completions with their
    /// adapter resolved now, so a later unload cannot pull it from under them.
    fn take(&mut self, job: Job, batch: &mut Vec<Admitted>) {
        match job {
            Job::Complete(job, reply) => match self.registry.conditioning(&job.model) {
                Ok(conditioning) => batch.push(Admitted {
                    job,
                    conditioning,
                    reply,
                }),
                Err(err) => {
                    let _ = reply.send(Err(err.into()));
                }
            },
            Job::Load(name, path, reply) => {
                let result = self.registry.load(&name, &path).map_err(Into::into);
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

    /// One mixed-adapter generation for the group; rows that cannot share a batch (their
    /// lengths together exceed the model) run alone instead.
    fn run_group(&self, group: Vec<Admitted>) {
        let config = |rows: &[&Admitted]| {
            let lead = &rows[0].job;
            GenerationConfig {
                max_new_tokens: rows.iter().map(|r| r.job.max_tokens).max().unwrap_or(0),
                sampling: lead.sampling,
                seed: lead.seed,
                eos_id: Some(self.eos_id),
                pad_id: self.eos_id,
                use_cache: true,
            }
        };
        let generate_rows = |rows: &[&Admitted]| {
            let mixed: Vec<MixedRow<'_>> = rows
                .iter()
                .map(|r| MixedRow {
                    tokens: &r.job.prompt,
                    conditioning: &r.conditioning,
                })
                .collect();
            generate_mixed(&self.model, &mixed, &config(rows))
        };
        let rows: Vec<&Admitted> = group.iter().collect();
        let outputs: Vec<Result<Vec<u32>, String>> = match generate_rows(&rows) {
            Ok(outputs) => outputs.into_iter().map(Ok).collect(),
            Err(_) if rows.len() > 1 => rows
                .iter()
                .map(|row| {
                    generate_rows(std::slice::from_ref(row))
                        .map(|mut out| out.remove(0))
                        .map_err(|e| e.to_string())
                })
                .collect(),
            Err(err) => vec![Err(err.to_string())],
        };
        for (admitted, output) in group.into_iter().zip(outputs) {
            let result = output
                .map(|mut tokens| {
                    // Greedy rows share a batch whatever their lengths: each keeps its own.
                    tokens.truncate(admitted.job.max_tokens);
                    let stopped = tokens.last() == Some(&self.eos_id);
                    Completion { tokens, stopped }
                })
                .map_err(EngineError::Input);
            let _ = admitted.reply.send(result);
        }
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
