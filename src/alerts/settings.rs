//! The health thresholds ([`HealthSettings`]): each check's `degraded,unhealthy` pair, parsed
//! and validated as flags and variables.

use super::report::Status;

/// Two thresholds of one check: crossing the first makes it `degraded`, the second `unhealthy`.
/// A threshold of `0` turns that level off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels {
    pub degraded: f64,
    pub unhealthy: f64,
}

impl Levels {
    /// Levels for a value that is worse when higher: `value >= threshold` trips.
    pub(super) fn above(&self, value: f64) -> Option<(Status, f64)> {
        if self.unhealthy > 0.0 && value >= self.unhealthy {
            Some((Status::Unhealthy, self.unhealthy))
        } else if self.degraded > 0.0 && value >= self.degraded {
            Some((Status::Degraded, self.degraded))
        } else {
            None
        }
    }

    /// Levels for a value that is worse when lower: `value < threshold` trips.
    pub(super) fn below(&self, value: f64) -> Option<(Status, f64)> {
        if self.unhealthy > 0.0 && value < self.unhealthy {
            Some((Status::Unhealthy, self.unhealthy))
        } else if self.degraded > 0.0 && value < self.degraded {
            Some((Status::Degraded, self.degraded))
        } else {
            None
        }
    }
}

fn parse_levels(text: &str) -> Result<Levels, String> {
    let (degraded, unhealthy) = text
        .split_once(',')
        .ok_or_else(|| "expected two numbers, `degraded,unhealthy`".to_owned())?;
    let number = |part: &str| -> Result<f64, String> {
        let value: f64 = part
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not a number", part.trim()))?;
        if !value.is_finite() || value < 0.0 {
            return Err(format!("`{}` must be zero or positive", part.trim()));
        }
        Ok(value)
    };
    Ok(Levels {
        degraded: number(degraded)?,
        unhealthy: number(unhealthy)?,
    })
}

/// `degraded,unhealthy` for a check that is worse when higher.
fn parse_above(text: &str) -> Result<Levels, String> {
    let levels = parse_levels(text)?;
    if levels.degraded > 0.0 && levels.unhealthy > 0.0 && levels.degraded > levels.unhealthy {
        return Err("the degraded threshold must not exceed the unhealthy one".to_owned());
    }
    Ok(levels)
}

fn parse_rate(text: &str) -> Result<Levels, String> {
    let levels = parse_above(text)?;
    if levels.degraded > 1.0 || levels.unhealthy > 1.0 {
        return Err("rates are fractions between 0 and 1".to_owned());
    }
    Ok(levels)
}

/// `degraded,unhealthy` for a check that is worse when lower (free disk).
fn parse_below(text: &str) -> Result<Levels, String> {
    let levels = parse_levels(text)?;
    if levels.degraded > 0.0 && levels.unhealthy > 0.0 && levels.degraded < levels.unhealthy {
        return Err("the degraded threshold must not be below the unhealthy one".to_owned());
    }
    Ok(levels)
}

/// Health thresholds and the monitor's pace. Each pair is `degraded,unhealthy`; `0` turns a
/// level off. Flattened into [`crate::config::Config`], so each is a flag and a variable.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct HealthSettings {
    /// Seconds between the health monitor's checks (alerts go out when the state changes).
    #[arg(
        long = "health-check-interval-secs",
        env = "HEALTH_CHECK_INTERVAL_SECS",
        default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub check_interval_secs: u64,

    /// Failed (dead-letter) jobs in a queue: `degraded,unhealthy`.
    #[arg(long = "health-failed-jobs", env = "HEALTH_FAILED_JOBS", default_value = "10,1000", value_parser = parse_above)]
    pub failed_jobs: Levels,

    /// Share of attempts that failed in the last 5 minutes: `degraded,unhealthy` (0 to 1).
    #[arg(long = "health-failure-rate", env = "HEALTH_FAILURE_RATE", default_value = "0.1,0.5", value_parser = parse_rate)]
    pub failure_rate: Levels,

    /// Attempts a queue must have finished in the last 5 minutes before its failure rate counts.
    #[arg(
        long = "health-failure-rate-min-attempts",
        env = "HEALTH_FAILURE_RATE_MIN_ATTEMPTS",
        default_value_t = 20
    )]
    pub failure_rate_min_attempts: u64,

    /// Jobs waiting in a queue: `degraded,unhealthy`.
    #[arg(long = "health-waiting-jobs", env = "HEALTH_WAITING_JOBS", default_value = "1000,10000", value_parser = parse_above)]
    pub waiting_jobs: Levels,

    /// Seconds the oldest waiting job has waited: `degraded,unhealthy`.
    #[arg(long = "health-oldest-waiting-secs", env = "HEALTH_OLDEST_WAITING_SECS", default_value = "60,600", value_parser = parse_above)]
    pub oldest_waiting_secs: Levels,

    /// Jobs that stalled (lost their worker) in the last 5 minutes: `degraded,unhealthy`.
    #[arg(long = "health-stalled-jobs", env = "HEALTH_STALLED_JOBS", default_value = "1,10", value_parser = parse_above)]
    pub stalled_jobs: Levels,

    /// Free space in DATA_DIR, in MB, below which health degrades: `degraded,unhealthy`.
    #[arg(long = "health-min-free-disk-mb", env = "HEALTH_MIN_FREE_DISK_MB", default_value = "1024,100", value_parser = parse_below)]
    pub min_free_disk_mb: Levels,

    /// p99, in ms, of the time the store's commits took to write and sync over the last minute
    /// or two (at least 10 commits): `degraded,unhealthy`. Every send waits for one or two.
    #[arg(long = "health-commit-p99-ms", env = "HEALTH_COMMIT_P99_MS", default_value = "50,500", value_parser = parse_above)]
    pub commit_p99_ms: Levels,
}

impl Default for HealthSettings {
    /// The same values as the flags' defaults (a unit test keeps them equal).
    fn default() -> HealthSettings {
        HealthSettings {
            check_interval_secs: 15,
            failed_jobs: Levels {
                degraded: 10.0,
                unhealthy: 1000.0,
            },
            failure_rate: Levels {
                degraded: 0.1,
                unhealthy: 0.5,
            },
            failure_rate_min_attempts: 20,
            waiting_jobs: Levels {
                degraded: 1000.0,
                unhealthy: 10_000.0,
            },
            oldest_waiting_secs: Levels {
                degraded: 60.0,
                unhealthy: 600.0,
            },
            stalled_jobs: Levels {
                degraded: 1.0,
                unhealthy: 10.0,
            },
            min_free_disk_mb: Levels {
                degraded: 1024.0,
                unhealthy: 100.0,
            },
            commit_p99_ms: Levels {
                degraded: 50.0,
                unhealthy: 500.0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        settings: HealthSettings,
    }

    #[test]
    fn defaults_match_the_flags() {
        let parsed = Wrapper::try_parse_from(["courier"]).unwrap();
        // Variables in the test environment would override the flags' defaults.
        if std::env::vars().all(|(name, _)| !name.starts_with("HEALTH_")) {
            assert_eq!(parsed.settings, HealthSettings::default());
        }
    }

    #[test]
    fn levels_are_validated() {
        assert_eq!(
            parse_above("2, 5").unwrap(),
            Levels {
                degraded: 2.0,
                unhealthy: 5.0
            }
        );
        assert!(parse_above("5,2").is_err());
        assert!(parse_above("0,2").is_ok());
        assert!(parse_above("5").is_err());
        assert!(parse_above("-1,2").is_err());
        assert!(parse_rate("0.1,1.5").is_err());
        assert!(parse_below("100,1024").is_err());
        assert!(parse_below("1024,100").is_ok());
        let error = Wrapper::try_parse_from(["courier", "--health-failed-jobs", "x,1"])
            .err()
            .unwrap();
        assert!(error.to_string().contains("not a number"), "{error}");
    }

    #[test]
    fn levels_trip_at_their_thresholds_and_zero_is_off() {
        let levels = Levels {
            degraded: 10.0,
            unhealthy: 100.0,
        };
        assert_eq!(levels.above(9.0), None);
        assert_eq!(levels.above(10.0), Some((Status::Degraded, 10.0)));
        assert_eq!(levels.above(100.0), Some((Status::Unhealthy, 100.0)));
        let off = Levels {
            degraded: 0.0,
            unhealthy: 0.0,
        };
        assert_eq!(off.above(1e9), None);
        let disk = Levels {
            degraded: 1024.0,
            unhealthy: 100.0,
        };
        assert_eq!(disk.below(2048.0), None);
        assert_eq!(disk.below(500.0), Some((Status::Degraded, 1024.0)));
        assert_eq!(disk.below(50.0), Some((Status::Unhealthy, 100.0)));
    }
}
