//! Job options from Bull-style JSON, validated before anything is stored.
//!
//! Accepts the shapes Bull users write: `backoff` as a number (fixed delay), a string
//! (`"exponential"`), or `{type, delay, jitter}`; `removeOnComplete` / `removeOnFail` as a bool, a
//! count, or `{age, count}` (age in seconds, as in Bull). Every bad value is a
//! [`QueueError::InvalidOptions`] naming the field.

use serde_json::{Map, Value};

use super::error::QueueError;
use super::model::{Backoff, BackoffKind, JobOptions, KeepJobs};

/// Bull's highest priority number (lowest priority).
pub const MAX_PRIORITY: u32 = 2_097_152;
/// Longest custom job id accepted.
pub const MAX_JOB_ID_LEN: usize = 128;
/// Longest job group key accepted.
pub const MAX_GROUP_LEN: usize = 256;
/// Default delay of a backoff given only by its type.
pub const DEFAULT_BACKOFF_MS: u64 = 1_000;

fn invalid(message: impl Into<String>) -> QueueError {
    QueueError::InvalidOptions(message.into())
}

/// Checks options built in code (the JSON path calls it too).
pub fn validate(opts: &JobOptions) -> Result<(), QueueError> {
    if opts.attempts == 0 {
        return Err(invalid("attempts must be at least 1"));
    }
    if let Some(priority) = opts.priority {
        if !(1..=MAX_PRIORITY).contains(&priority) {
            return Err(invalid(format!(
                "priority must be between 1 and {MAX_PRIORITY}"
            )));
        }
    }
    if let Some(id) = &opts.job_id {
        validate_job_id(id)?;
    }
    if let Some(group) = &opts.group {
        if group.is_empty() || group.len() > MAX_GROUP_LEN || group.chars().any(char::is_control) {
            return Err(invalid(format!(
                "group must be 1 to {MAX_GROUP_LEN} bytes without control characters"
            )));
        }
    }
    if opts.timeout_ms == Some(0) {
        return Err(invalid("timeout must be positive"));
    }
    if let Some(backoff) = &opts.backoff {
        if !(0.0..=1.0).contains(&backoff.jitter) {
            return Err(invalid("backoff.jitter must be between 0 and 1"));
        }
    }
    Ok(())
}

pub fn validate_job_id(id: &str) -> Result<(), QueueError> {
    if id.is_empty() || id.len() > MAX_JOB_ID_LEN {
        return Err(invalid(format!(
            "jobId must be 1 to {MAX_JOB_ID_LEN} bytes"
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(invalid("jobId must not contain control characters"));
    }
    Ok(())
}

/// Parses Bull-style options. `Value::Null` gives the defaults.
pub fn from_json(value: &Value) -> Result<JobOptions, QueueError> {
    let empty = Map::new();
    let map = match value {
        Value::Null => &empty,
        Value::Object(map) => map,
        _ => return Err(invalid("options must be an object")),
    };
    let mut opts = JobOptions::default();
    for (field, value) in map {
        match field.as_str() {
            "priority" => opts.priority = Some(to_u32(field, value)?),
            "delay" => opts.delay_ms = to_u64(field, value)?,
            "attempts" => opts.attempts = to_u32(field, value)?,
            "backoff" => opts.backoff = Some(backoff(value)?),
            "timeout" => opts.timeout_ms = Some(to_u64(field, value)?),
            "jobId" => {
                opts.job_id = Some(match value {
                    Value::String(id) => id.clone(),
                    Value::Number(number) => number.to_string(),
                    _ => return Err(invalid("jobId must be a string")),
                })
            }
            "lifo" => opts.lifo = to_bool(field, value)?,
            "removeOnComplete" => opts.remove_on_complete = Some(keep(field, value)?),
            "removeOnFail" => opts.remove_on_fail = Some(keep(field, value)?),
            other => return Err(invalid(format!("unknown option {other}"))),
        }
    }
    validate(&opts)?;
    Ok(opts)
}

fn to_u64(field: &str, value: &Value) -> Result<u64, QueueError> {
    match value {
        Value::Number(number) => {
            if let Some(whole) = number.as_u64() {
                Ok(whole)
            } else if number.as_i64().is_some_and(|n| n < 0)
                || number.as_f64().is_some_and(|n| n < 0.0)
            {
                Err(invalid(format!("{field} must not be negative")))
            } else {
                Err(invalid(format!("{field} must be a whole number")))
            }
        }
        _ => Err(invalid(format!("{field} must be a number"))),
    }
}

fn to_u32(field: &str, value: &Value) -> Result<u32, QueueError> {
    u32::try_from(to_u64(field, value)?).map_err(|_| invalid(format!("{field} is too large")))
}

fn to_bool(field: &str, value: &Value) -> Result<bool, QueueError> {
    value
        .as_bool()
        .ok_or_else(|| invalid(format!("{field} must be true or false")))
}

fn backoff(value: &Value) -> Result<Backoff, QueueError> {
    let kind_of = |name: &str| match name {
        "fixed" => Ok(BackoffKind::Fixed),
        "exponential" => Ok(BackoffKind::Exponential),
        other => Err(invalid(format!("unknown backoff type {other}"))),
    };
    match value {
        Value::Number(_) => Ok(Backoff {
            kind: BackoffKind::Fixed,
            delay: to_u64("backoff", value)?,
            jitter: 0.0,
        }),
        Value::String(name) => Ok(Backoff {
            kind: kind_of(name)?,
            delay: DEFAULT_BACKOFF_MS,
            jitter: 0.0,
        }),
        Value::Object(map) => {
            let kind = match map.get("type") {
                Some(Value::String(name)) => kind_of(name)?,
                Some(_) => return Err(invalid("backoff.type must be a string")),
                None => BackoffKind::Fixed,
            };
            let delay = match map.get("delay") {
                Some(value) => to_u64("backoff.delay", value)?,
                None => DEFAULT_BACKOFF_MS,
            };
            let jitter = match map.get("jitter") {
                Some(Value::Number(number)) => number.as_f64().unwrap_or(-1.0),
                Some(_) => return Err(invalid("backoff.jitter must be a number")),
                None => 0.0,
            };
            if let Some(other) = map
                .keys()
                .find(|key| !matches!(key.as_str(), "type" | "delay" | "jitter"))
            {
                return Err(invalid(format!("unknown backoff field {other}")));
            }
            Ok(Backoff {
                kind,
                delay,
                jitter,
            })
        }
        _ => Err(invalid(
            "backoff must be a number, a type name or an object",
        )),
    }
}

fn keep(field: &str, value: &Value) -> Result<KeepJobs, QueueError> {
    match value {
        Value::Bool(true) => Ok(KeepJobs::NONE),
        Value::Bool(false) => Ok(KeepJobs::ALL),
        Value::Number(_) => Ok(KeepJobs {
            count: Some(to_u64(field, value)?),
            age_ms: None,
        }),
        Value::Object(map) => {
            if let Some(other) = map
                .keys()
                .find(|key| !matches!(key.as_str(), "age" | "count"))
            {
                return Err(invalid(format!("unknown {field} field {other}")));
            }
            let count = map
                .get("count")
                .map(|v| to_u64(&format!("{field}.count"), v))
                .transpose()?;
            let age_seconds = map
                .get("age")
                .map(|v| to_u64(&format!("{field}.age"), v))
                .transpose()?;
            Ok(KeepJobs {
                count,
                age_ms: age_seconds.map(|seconds| seconds.saturating_mul(1000)),
            })
        }
        _ => Err(invalid(format!(
            "{field} must be a bool, a count or {{age, count}}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bull_shapes_parse() {
        let opts = from_json(&json!({
            "priority": 1, "delay": 500, "attempts": 3, "backoff": "exponential",
            "timeout": 2000, "jobId": "abc", "lifo": true,
            "removeOnComplete": {"age": 3600, "count": 10000}, "removeOnFail": 50
        }))
        .unwrap();
        assert_eq!(opts.priority, Some(1));
        assert_eq!(opts.delay_ms, 500);
        assert_eq!(opts.attempts, 3);
        assert_eq!(opts.backoff.unwrap().kind, BackoffKind::Exponential);
        assert_eq!(opts.timeout_ms, Some(2000));
        assert_eq!(opts.job_id.as_deref(), Some("abc"));
        assert!(opts.lifo);
        assert_eq!(
            opts.remove_on_complete,
            Some(KeepJobs {
                count: Some(10_000),
                age_ms: Some(3_600_000)
            })
        );
        assert_eq!(
            opts.remove_on_fail,
            Some(KeepJobs {
                count: Some(50),
                age_ms: None
            })
        );
        assert_eq!(
            from_json(&json!({"removeOnComplete": true}))
                .unwrap()
                .remove_on_complete,
            Some(KeepJobs::NONE)
        );
        assert_eq!(
            from_json(&json!({"backoff": 250}))
                .unwrap()
                .backoff
                .unwrap()
                .delay,
            250
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let message = |value| from_json(&value).unwrap_err().to_string();
        assert!(message(json!({"attempts": 0})).contains("attempts"));
        assert!(message(json!({"delay": -5})).contains("delay must not be negative"));
        assert!(message(json!({"priority": 0})).contains("priority"));
        assert!(message(json!({"backoff": "linear"})).contains("linear"));
        assert!(message(json!({"backoff": {"type": "fixed", "jitter": 2}})).contains("jitter"));
        assert!(message(json!({"jobId": ""})).contains("jobId"));
        assert!(message(json!({"colour": "red"})).contains("colour"));
        assert!(message(json!([1])).contains("object"));
    }
}
