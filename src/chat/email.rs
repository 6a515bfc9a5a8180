//! E-mails (notifications, account links): SMTP through lettre when `SMTP_URL` is set, `.eml`
//! files otherwise.

use std::path::PathBuf;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::error::ChatError;

pub const DEFAULT_FROM: &str = "Courier <no-reply@courier.localhost>";

pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    Outbox {
        transport: AsyncFileTransport<Tokio1Executor>,
        dir: PathBuf,
        from: Mailbox,
    },
}

/// An e-mail to send.
pub struct Email {
    pub to_name: String,
    pub to_address: String,
    pub subject: String,
    pub body: String,
    /// For notification e-mails: the one-click address mail clients post to for unsubscribing
    /// (sent as `List-Unsubscribe` with `List-Unsubscribe-Post`, RFC 8058).
    pub unsubscribe: Option<String>,
}

impl Mailer {
    /// SMTP when `smtp_url` is given (`smtp://user:pass@host:port`, `smtps://...`), else files
    /// in `outbox_dir`.
    pub fn new(
        smtp_url: Option<&str>,
        from: Option<&str>,
        outbox_dir: PathBuf,
    ) -> Result<Mailer, String> {
        let from: Mailbox = from
            .unwrap_or(DEFAULT_FROM)
            .parse()
            .map_err(|err| format!("EMAIL_FROM is not a valid address: {err}"))?;
        match smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|err| format!("SMTP_URL is invalid: {err}"))?
                    .timeout(Some(std::time::Duration::from_secs(20)))
                    .build();
                Ok(Mailer::Smtp { transport, from })
            }
            None => Ok(Mailer::Outbox {
                transport: AsyncFileTransport::new(&outbox_dir),
                dir: outbox_dir,
                from,
            }),
        }
    }

    pub async fn send(&self, email: Email) -> Result<(), ChatError> {
        let from = match self {
            Mailer::Smtp { from, .. } | Mailer::Outbox { from, .. } => from.clone(),
        };
        let to = Mailbox::new(
            Some(email.to_name),
            email
                .to_address
                .parse()
                .map_err(|err| ChatError::Invalid(format!("bad recipient address: {err}")))?,
        );
        let mut builder = Message::builder()
            .from(from)
            .to(to)
            .subject(email.subject)
            .header(ContentType::TEXT_PLAIN);
        if let Some(url) = email.unsubscribe {
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{url}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let message = builder
            .body(email.body)
            .map_err(|err| ChatError::Internal(format!("cannot build e-mail: {err}")))?;
        match self {
            Mailer::Smtp { transport, .. } => {
                transport.send(message).await.map(|_| ()).map_err(|err| {
                    ChatError::Internal(format!("smtp server refused the e-mail: {err}"))
                })
            }
            Mailer::Outbox { transport, dir, .. } => {
                tokio::fs::create_dir_all(dir).await.map_err(|err| {
                    ChatError::Internal(format!("cannot create the outbox: {err}"))
                })?;
                transport
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|err| ChatError::Internal(format!("cannot write the e-mail: {err}")))
            }
        }
    }
}
