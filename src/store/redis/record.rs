//! A job's hash as the scripts write it, read back into the job model.
//!
//! The spec (name, data, options) is one JSON field written once by `add`; the status is one
//! field per value (decimal numbers, a missing field for `None`), so a script changes only what
//! a transition changes. The failure traces are a JSON array the scripts append to.

use std::collections::HashMap;

use crate::store::job::{Job, JobSpec, JobState, JobStatus, Millis, NewJob};
use crate::store::StoreError;

/// Width of the position before the id in a sorted-set member (`pad` in `prelude.lua`).
const POSITION_WIDTH: usize = 16;

/// The spec `add` stores for `job`.
pub(super) fn spec_json(job: &NewJob, now: Millis) -> Result<String, StoreError> {
    let spec = JobSpec {
        name: job.name.clone(),
        data: job.data.clone(),
        opts: job.opts.clone(),
        created_at: now,
    };
    serde_json::to_string(&spec).map_err(|err| StoreError::Codec(err.to_string()))
}

pub(super) fn parse_spec(text: &str) -> Result<JobSpec, StoreError> {
    serde_json::from_str(text).map_err(|err| StoreError::Codec(format!("job spec: {err}")))
}

/// The job id in a sorted-set member.
pub(super) fn id_of(member: &str) -> Result<&str, StoreError> {
    member
        .get(POSITION_WIDTH..)
        .ok_or_else(|| StoreError::Codec(format!("index member {member:?} is too short")))
}

/// The job in the hash `fields` of job `id`.
pub(super) fn job(
    queue: &str,
    id: &str,
    fields: &HashMap<String, String>,
) -> Result<Job, StoreError> {
    let field = |name: &str| fields.get(name).map(String::as_str);
    let required = |name: &str| {
        field(name).ok_or_else(|| StoreError::Codec(format!("job {id}: no field {name}")))
    };
    let number = |name: &str| -> Result<Option<u64>, StoreError> {
        field(name)
            .map(|value| {
                value
                    .parse::<u64>()
                    .map_err(|_| StoreError::Codec(format!("job {id}: {name} is {value:?}")))
            })
            .transpose()
    };
    let count = |name: &str| -> Result<u32, StoreError> {
        Ok(number(name)?.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)))
    };
    let state_text = required("state")?;
    let state = JobState::parse(state_text)
        .ok_or_else(|| StoreError::Codec(format!("job {id}: state {state_text:?}")))?;
    // An empty array comes back from Lua's cjson as `{}`: no traces either way.
    let stacktrace = field("trace")
        .and_then(|trace| serde_json::from_str::<Vec<String>>(trace).ok())
        .unwrap_or_default();
    let status = JobStatus {
        state,
        order: number("order")?.unwrap_or(0),
        priority: count("prio")?,
        lifo: field("lifo") == Some("1"),
        ready_at: number("ready")?.unwrap_or(0),
        attempts_made: count("attempts")?,
        stalled_count: count("stalled")?,
        progress: field("progress").unwrap_or("0").to_owned(),
        processed_at: number("processed")?,
        finished_at: number("finished")?,
        failed_reason: field("reason").map(str::to_owned),
        stacktrace,
        return_value: field("ret").map(str::to_owned),
        token: number("token")?.unwrap_or(0),
        log_count: count("logs")?,
        entered_at: number("entered")?.unwrap_or(0),
        group: field("group").map(str::to_owned),
    };
    Ok(Job {
        queue: queue.to_owned(),
        id: id.to_owned(),
        spec: parse_spec(required("spec")?)?,
        status,
    })
}
