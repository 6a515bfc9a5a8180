use std::fs;

use super::*;

fn parse(args: &[&str]) -> Result<Config, ConfigError> {
    Config::from_args(std::iter::once("courier").chain(args.iter().copied()))
}

fn invalid_message(args: &[&str]) -> String {
    match parse(args) {
        Err(ConfigError::Invalid(message)) => message,
        other => panic!("expected an invalid setting, got {other:?}"),
    }
}

#[test]
fn defaults_match_the_brief() {
    // Flags win over the environment, so set the ones the environment might carry.
    let config = parse(&["--port", "5000", "--data-dir", "./data"]).unwrap();
    assert_eq!(config.port, 5000);
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert_eq!(
        Config::command_default("rate_limit_auth"),
        Some("20".to_owned())
    );
    assert_eq!(
        Config::command_default("rate_limit_send"),
        Some("600".to_owned())
    );
    assert_eq!(
        Config::command_default("send_backlog_limit"),
        Some("5000".to_owned())
    );
    assert_eq!(
        Config::command_default("login_max_failures"),
        Some("10".to_owned())
    );
    assert_eq!(
        Config::command_default("shutdown_grace_secs"),
        Some("10".to_owned())
    );
    assert_eq!(
        Config::command_default("bind_addr"),
        Some("0.0.0.0".to_owned())
    );
}

#[test]
fn bad_port_is_one_line_naming_the_variable() {
    let message = invalid_message(&["--port", "notaport"]);
    assert_eq!(
        message,
        "invalid value 'notaport' for PORT (--port): invalid digit found in string"
    );
}

#[test]
fn the_store_cache_is_64_mb_unless_set_and_never_zero() {
    assert_eq!(
        Config::command_default("store_cache_mb"),
        Some("64".to_owned())
    );
    let config = parse(&["--store-cache-mb", "16"]).unwrap();
    assert_eq!(config.store_cache_mb, 16);
    let message = invalid_message(&["--store-cache-mb", "0"]);
    assert!(
        message.starts_with("invalid value '0' for STORE_CACHE_MB (--store-cache-mb)"),
        "{message}"
    );
}

#[test]
fn the_image_pixel_limit_is_40_megapixels_unless_set_and_never_zero() {
    assert_eq!(
        Config::command_default("max_image_pixels"),
        Some("40000000".to_owned())
    );
    let config = parse(&["--max-image-pixels", "1000"]).unwrap();
    assert_eq!(config.max_image_pixels, 1000);
    let message = invalid_message(&["--max-image-pixels", "0"]);
    assert!(
        message.starts_with("invalid value '0' for MAX_IMAGE_PIXELS (--max-image-pixels)"),
        "{message}"
    );
}

#[test]
fn unknown_backend_lists_the_choices() {
    let message = invalid_message(&["--queue-backend", "kafka"]);
    assert_eq!(
        message,
        "invalid value 'kafka' for QUEUE_BACKEND (--queue-backend): expected one of sled, redis"
    );
    assert!(!message.contains('\n'));
}

#[test]
fn booleans_accept_the_usual_spellings() {
    assert_eq!(
        Config::command_default("allow_short_admin_key"),
        Some("false".to_owned())
    );
    assert!(parse(&["--admin-read-only"]).unwrap().admin_read_only);
    assert!(
        parse(&["--admin-read-only", "yes"])
            .unwrap()
            .admin_read_only
    );
    assert!(!parse(&["--admin-read-only=false"]).unwrap().admin_read_only);
    assert!(invalid_message(&["--admin-read-only=maybe"])
        .starts_with("invalid value 'maybe' for ADMIN_READ_ONLY"));
}

#[test]
fn empty_secrets_count_as_unset() {
    let config = parse(&["--jwt-secret", "", "--queue-admin-key", " "]).unwrap();
    assert_eq!(config.jwt_secret, None);
    assert_eq!(config.queue_admin_key, None);
}

#[test]
fn admin_keys_shorter_than_32_characters_are_refused_unless_allowed() {
    let short = "a".repeat(MIN_ADMIN_KEY_CHARS - 1);
    let message = invalid_message(&["--queue-admin-key", &short]);
    assert_eq!(
        message,
        "QUEUE_ADMIN_KEY is 31 characters long, shorter than the 32 an admin key needs: set \
         a longer one (`openssl rand -hex 32` makes one), or set ALLOW_SHORT_ADMIN_KEY=true \
         to accept it"
    );
    assert!(!message.contains(&short), "the key is never echoed");
    // Characters, not bytes: 31 two-byte characters are still too short.
    let accented = "é".repeat(MIN_ADMIN_KEY_CHARS - 1);
    assert!(invalid_message(&["--queue-admin-key", &accented]).contains("is 31 characters"));
    let exact = "a".repeat(MIN_ADMIN_KEY_CHARS);
    assert!(parse(&["--queue-admin-key", &exact]).is_ok());
    let allowed = parse(&["--queue-admin-key", "admin123", "--allow-short-admin-key"]).unwrap();
    assert!(allowed.allow_short_admin_key);
    assert_eq!(allowed.queue_admin_key.as_deref(), Some("admin123"));
}

#[test]
fn a_short_stored_admin_key_is_refused_unless_allowed() {
    let data_dir = tempfile::tempdir().unwrap();
    let secrets = data_dir.path().join("secrets");
    fs::create_dir_all(&secrets).unwrap();
    fs::write(secrets.join("admin_key"), "admin123\n").unwrap();
    let mut config = Config::for_tests(data_dir.path());
    config.queue_admin_key = None;
    let err = ensure_secrets(&mut config.clone()).unwrap_err();
    let Some(ConfigError::Invalid(message)) = err.downcast_ref::<ConfigError>() else {
        panic!("expected an invalid setting, got {err:#}");
    };
    assert!(message.starts_with("the admin key in "), "{message}");
    assert!(message.contains("is 8 characters long"), "{message}");
    assert!(!message.contains("admin123"), "{message}");
    config.allow_short_admin_key = true;
    let allowed = ensure_secrets(&mut config).unwrap();
    assert_eq!(allowed.admin_key, "admin123");
}

#[test]
fn ephemeral_picks_a_free_loopback_port_unless_one_is_given() {
    let config = parse(&["--ephemeral"]).unwrap();
    assert!(config.ephemeral);
    assert_eq!(config.port, 0);
    assert_eq!(config.bind_addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let given = parse(&["--ephemeral", "--port", "5001", "--bind-addr", "0.0.0.0"]).unwrap();
    assert_eq!(given.port, 5001);
    assert_eq!(given.bind_addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert!(!parse(&["--ephemeral=false"]).unwrap().ephemeral);
}

#[test]
fn ephemeral_refuses_a_storage_setting_in_one_line() {
    let message = invalid_message(&["--ephemeral", "--data-dir", "./data"]);
    assert_eq!(
        message,
        "COURIER_EPHEMERAL (--ephemeral) keeps every store in memory and cannot be combined \
         with DATA_DIR (--data-dir): unset it or drop --ephemeral"
    );
    let message = invalid_message(&[
        "--ephemeral",
        "--queue-backend",
        "sled",
        "--chat-backend",
        "sled",
    ]);
    assert!(
        message.contains(
            "combined with QUEUE_BACKEND (--queue-backend) or CHAT_BACKEND (--chat-backend)"
        ),
        "{message}"
    );
    assert!(!message.contains('\n'));
}

#[test]
fn ephemeral_secrets_touch_no_file() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(data_dir.path().join("data"));
    config.ephemeral = true;
    config.jwt_secret = None;
    config.queue_admin_key = None;
    let secrets = ensure_secrets(&mut config).unwrap();
    assert_eq!(secrets.admin_key_origin, SecretOrigin::Ephemeral);
    assert_eq!(secrets.jwt_secret_origin, SecretOrigin::Ephemeral);
    assert_eq!(secrets.admin_key.len(), 64);
    assert_eq!(
        config.queue_admin_key.as_deref(),
        Some(secrets.admin_key.as_str())
    );
    assert!(!data_dir.path().join("data").exists());
}

#[test]
fn debug_redacts_credentials() {
    let config = Config::for_tests("/tmp/x");
    let secret = config.jwt_secret.clone().unwrap();
    assert!(!format!("{config:?}").contains(&secret));
}

impl Config {
    fn command_default(id: &str) -> Option<String> {
        use clap::CommandFactory as _;
        let command = Config::command();
        let arg = command.get_arguments().find(|arg| arg.get_id() == id)?;
        arg.get_default_values()
            .first()
            .map(|value| value.to_string_lossy().into_owned())
    }
}
