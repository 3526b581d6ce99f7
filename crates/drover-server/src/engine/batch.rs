//! Agent operations on one deployment that arrive together go into one commit.
//!
//! A fleet stage makes every one of its agents claim, and later report, on the same deployment
//! at the same moment; one optimistic commit each would mostly conflict and retry. Instead the
//! first caller for a deployment becomes its *leader*: it takes every operation queued for the
//! deployment, applies them all in one [`Engine::mutate_with_logs`], answers each, and goes on
//! until the queue is empty; callers that arrive meanwhile only queue and wait for their answer.
//! Each operation is checked on its own (one agent's stale result does not fail another's
//! claim); the commit is still one transaction, made before anyone is answered.

use drover_core::machine::{self, ResultStatus};
use drover_core::store::NewLog;
use drover_core::{Error, Result};
use drover_types::Timestamp;
use drover_types::agent::{Assignment, AttemptResult};
use tokio::sync::oneshot;

use super::Engine;

/// One agent's operation on a deployment.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Claim { stage: usize, task: usize, target: Option<String>, agent: String, attempt_id: String },
    Result { agent: String, attempt_id: String, stage: usize, task: usize, result: AttemptResult },
}

impl Op {
    fn agent(&self) -> &str {
        match self {
            Op::Claim { agent, .. } | Op::Result { agent, .. } => agent,
        }
    }
}

#[derive(Debug)]
pub(super) enum Done {
    /// The claim's assignment (`None` only if the attempt vanished right away).
    Claimed(Option<Box<Assignment>>),
    Recorded(ResultStatus),
}

pub(super) struct Queued {
    op: Op,
    reply: oneshot::Sender<Result<Done>>,
}

impl Engine {
    /// Applies `op` to deployment `dep`, together with whatever else is queued for it.
    pub(super) async fn apply_op(&self, dep: i64, op: Op) -> Result<Done> {
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut q = self.queued.lock().expect("poisoned");
            match q.get_mut(&dep) {
                Some(waiting) => {
                    waiting.push(Queued { op, reply });
                    false
                }
                None => {
                    q.insert(dep, vec![Queued { op, reply }]);
                    true
                }
            }
        };
        if lead {
            // In a task of its own: a caller that goes away (a poll cut off) must not take the
            // leader, and with it everyone's answers, along.
            match self.me.upgrade() {
                Some(me) => {
                    tokio::spawn(async move { me.lead(dep).await });
                }
                None => return Err(Error::Unavailable("the engine is stopping".into())),
            }
        }
        answer.await.unwrap_or_else(|_| Err(Error::Store("the engine dropped an agent operation".into())))
    }

    /// Applies batches for `dep` until nothing is queued; the entry's presence marks a leader.
    async fn lead(&self, dep: i64) {
        // Bounded: each round answers at least one operation; callers keep arriving only while
        // agents are active, and each of them waits for its own answer.
        loop {
            let batch: Vec<Queued> = {
                let mut q = self.queued.lock().expect("poisoned");
                match q.get_mut(&dep) {
                    Some(v) if !v.is_empty() => std::mem::take(v),
                    _ => {
                        q.remove(&dep);
                        return;
                    }
                }
            };
            let ops: Vec<Op> = batch.iter().map(|q| q.op.clone()).collect();
            let actor = match ops.as_slice() {
                [one] => format!("agent:{}", one.agent()),
                _ => "agents".to_string(),
            };
            let (lease, grace) = (self.lease, self.timeout_grace);
            let snap = match self.snapshot().await {
                Ok(s) => s,
                Err(e) => {
                    for q in batch {
                        let _ = q.reply.send(Err(e.clone()));
                    }
                    continue;
                }
            };
            let r = self
                .mutate_with_logs(dep, &actor, |st, _| {
                    let now = Timestamp::now();
                    let mut out = Vec::with_capacity(ops.len());
                    let mut logs = Vec::new();
                    for op in &ops {
                        out.push(match op {
                            Op::Claim { stage, task, target, agent, attempt_id } => machine::claim(
                                st,
                                (*stage, *task, target.as_deref()),
                                agent,
                                attempt_id,
                                now,
                                machine::Timing::new(lease, grace),
                            )
                            .map(|()| Done::Claimed(None)),
                            Op::Result { agent, attempt_id, stage, task, result } => {
                                let row = st.tasks.iter().find(|t| t.attempt_id.as_deref() == Some(attempt_id));
                                let target = row.and_then(|t| t.target.clone());
                                // The task's environment's secrets (an unknown attempt records nothing).
                                let masker = snap.masker(row.map(|t| t.environment.as_str()).unwrap_or(""));
                                if row.and_then(|t| t.agent.as_deref()) != Some(agent.as_str()) {
                                    Err(Error::Forbidden("this attempt belongs to another agent".into()))
                                } else {
                                    let r = machine::record_result(
                                        st,
                                        attempt_id,
                                        result.outcome,
                                        result.exit_code,
                                        result.message.as_deref().map(|m| masker.mask(m).into_owned()),
                                        now,
                                    );
                                    // With the result, in the same commit: a follower sees the
                                    // output with the status change.
                                    if matches!(r, Ok(ResultStatus::Recorded)) {
                                        logs.extend(result.logs.iter().map(|l| NewLog {
                                            stage: *stage,
                                            task: *task,
                                            agent: target.clone(),
                                            ts: now,
                                            stream: l.stream.clone(),
                                            line: masker.mask(&l.line).into_owned(),
                                        }));
                                    }
                                    r.map(Done::Recorded)
                                }
                            }
                        });
                    }
                    Ok((out, logs))
                })
                .await;
            match r {
                Ok((st, answers)) => {
                    for (q, a) in batch.into_iter().zip(answers) {
                        let a = match (a, &q.op) {
                            (Ok(Done::Claimed(_)), Op::Claim { attempt_id, .. }) => {
                                self.assignment(&st, attempt_id).await.map(|a| Done::Claimed(a.map(Box::new)))
                            }
                            (a, _) => a,
                        };
                        let _ = q.reply.send(a);
                    }
                }
                Err(e) => {
                    for q in batch {
                        let _ = q.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}
