//! Consumes the queue `mail`: renders each message with its template from
//! `mail-templates/<name>` into `outbox-mail/<message id>`, for a sender to
//! pick up.
//!
//! Shows: a queue consumer, in batches ([`Event::queue_batch`]) or one
//! message at a time ([`Event::queue_message`]), and the three ways a
//! message can go:
//!
//! - **rendered**: written to `outbox-mail/<id>`, keyed by the message (its
//!   id in a batch, the event's id alone), so a re-delivered message
//!   writes the same record;
//! - **not yet** (transient): its template does not exist, perhaps not yet
//!   published. In a batch, [`queue::retry_after`] retries that message
//!   alone in a minute while the rest succeed; alone, the handler fails
//!   with [`Error::retry_after`]. When its attempts run out it becomes a
//!   dead letter;
//! - **never** (malformed): no `to` address, or no `template`. Retrying
//!   cannot fix it. Alone, the handler fails with [`Error::permanent`]: a
//!   dead letter at once. In a batch, where failing would retry every
//!   message, it is written to `outbox-rejected/<id>` with the reason, and
//!   the batch succeeds.
//!
//! A message looks like
//! `{"to":"ada@example.com","template":"welcome","vars":{"name":"Ada"}}`,
//! a template like `{"subject":"Welcome, {name}","body":"Hello {name}!"}`.
//!
//! Register it as the consumer of `mail`, 20 messages at a time:
//! `picloud-host trigger add-queue shop --queue mail --script queue-consumer --batch 20 --as alice`

use std::time::Duration;

use picloud_sdk::{Error, Event, Result, handler, kv, log, queue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// How long a message whose template is missing waits before its retry.
pub const TEMPLATE_WAIT: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct Mail {
    to: String,
    template: String,
    #[serde(default)]
    vars: Map<String, Value>,
}

#[derive(Deserialize)]
struct Template {
    subject: String,
    body: String,
}

/// Why a message was not rendered.
enum Skip {
    /// Retrying may help: the message waits.
    NotYet(String),
    /// Retrying cannot help.
    Never(String),
}

#[handler]
fn consume(event: Event) -> Result<()> {
    if let Some(batch) = event.queue_batch() {
        let mut rendered = 0;
        for message in &batch.messages {
            match render(&message.id, &message.body)? {
                None => rendered += 1,
                Some(Skip::NotYet(why)) => {
                    log::warn!("message {} waits: {why}", message.id);
                    queue::retry_after(&message.id, TEMPLATE_WAIT)?;
                }
                Some(Skip::Never(why)) => {
                    log::error!("message {} rejected: {why}", message.id);
                    kv::set(
                        "outbox-rejected",
                        &message.id,
                        &json!({"reason": why, "message": message.body}),
                    )?;
                }
            }
        }
        log::info!(
            "rendered {rendered} of {} messages from {}",
            batch.messages.len(),
            batch.queue
        );
        return Ok(());
    }
    let Some(message) = event.queue_message() else {
        return Ok(()); // not a queue event: not for us
    };
    match render(event.id(), &message.body)? {
        None => Ok(()),
        Some(Skip::NotYet(why)) => Err(Error::retry_after(why, TEMPLATE_WAIT)),
        Some(Skip::Never(why)) => Err(Error::permanent(why)),
    }
}

/// Render one message into `outbox-mail/<id>`; `Some` says why not. A host
/// error fails the whole event (the host retries it).
fn render(id: &str, body: &Value) -> Result<Option<Skip>> {
    let mail = match Mail::deserialize(body) {
        Ok(mail) if mail.to.contains('@') => mail,
        Ok(mail) => {
            return Ok(Some(Skip::Never(format!(
                "{:?} is not an address",
                mail.to
            ))));
        }
        Err(e) => return Ok(Some(Skip::Never(format!("not a mail message: {e}")))),
    };
    let Some(template) = kv::get_json::<Template>("mail-templates", &mail.template)? else {
        return Ok(Some(Skip::NotYet(format!(
            "no template mail-templates/{}",
            mail.template
        ))));
    };
    let fill = |text: &str| {
        mail.vars
            .iter()
            .fold(text.to_owned(), |text, (name, value)| {
                let value = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                text.replace(&format!("{{{name}}}"), &value)
            })
    };
    kv::set(
        "outbox-mail",
        id,
        &json!({
            "to": mail.to,
            "subject": fill(&template.subject),
            "body": fill(&template.body),
        }),
    )?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use picloud_sdk::testing::{Retried, TestHost, batch_message, queue_batch, queue_message};
    use serde_json::json;

    use super::*;

    fn host() -> TestHost {
        let host = TestHost::new();
        host.seed_kv(
            "mail-templates",
            "welcome",
            &json!({"subject": "Welcome, {name}", "body": "Hello {name}, you are number {n}."}),
        );
        host
    }

    #[test]
    fn a_batch_renders_retries_and_rejects_message_by_message() {
        let host = host();
        let batch = queue_batch(
            "mail",
            [
                batch_message(
                    "m-1",
                    json!({"to": "ada@example.com", "template": "welcome", "vars": {"name": "Ada", "n": 7}}),
                ),
                batch_message(
                    "m-2",
                    json!({"to": "bo@example.com", "template": "invoice"}),
                ),
                batch_message("m-3", json!({"template": "welcome"})),
            ],
        );
        host.run(|| consume(batch)).unwrap();
        assert_eq!(
            host.kv("outbox-mail", "m-1"),
            Some(json!({"to": "ada@example.com", "subject": "Welcome, Ada",
                        "body": "Hello Ada, you are number 7."}))
        );
        assert_eq!(
            host.retried(),
            [Retried {
                message_id: "m-2".into(),
                delay: Some(Duration::from_secs(60))
            }]
        );
        assert_eq!(host.kv("outbox-mail", "m-2"), None);
        let rejected = host.kv("outbox-rejected", "m-3").expect("m-3 rejected");
        assert!(
            rejected["reason"]
                .as_str()
                .unwrap()
                .starts_with("not a mail message")
        );
    }

    #[test]
    fn a_single_message_fails_permanently_or_later() {
        let host = host();
        let e = host
            .run(|| {
                consume(queue_message(
                    "mail",
                    json!({"to": "nobody", "template": "welcome"}),
                ))
            })
            .unwrap_err();
        assert!(e.is_permanent(), "{e}");
        let e = host
            .run(|| {
                consume(queue_message(
                    "mail",
                    json!({"to": "a@b.c", "template": "gone"}),
                ))
            })
            .unwrap_err();
        assert_eq!(
            (e.is_permanent(), e.retry_delay()),
            (false, Some(TEMPLATE_WAIT))
        );
        host.run(|| {
            consume(queue_message(
                "mail",
                json!({"to": "a@b.c", "template": "welcome"}),
            ))
        })
        .unwrap();
        assert_eq!(
            host.kv("outbox-mail", "test-event").unwrap()["subject"],
            json!("Welcome, {name}")
        );
    }
}
