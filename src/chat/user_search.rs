//! Finding people by name (`GET /api/messages/users/search?q=`), for adding someone to a group
//! or starting a conversation.
//!
//! Names match case- and accent-insensitively (`zoe` finds "Zoë", `ELLE` finds "Hélène") as a
//! substring, names that start with the query (or have a word that does) first. An e-mail
//! address matches only when the query is that whole address: the sidebar never shows other
//! users' addresses, and a substring search on them ("@gmail") would list them.

use super::error::ChatError;
use super::last_seen::Presence;
use super::{accounts, names, Chat};
use crate::queue::model::Millis;
use crate::store::chat::UserRecord;

/// Most users one search returns.
pub const MAX_RESULTS: usize = 20;
/// Longest query, in characters.
pub const MAX_QUERY: usize = 100;

/// One user found.
#[derive(Debug, Clone)]
pub struct FoundUser {
    pub user: UserRecord,
    pub online: bool,
    pub last_seen: Option<Millis>,
}

/// Text as the search compares it: cleaned like a display name, decomposed, accents dropped,
/// lowercased.
pub fn fold(text: &str) -> String {
    crate::store::search::fold(&names::clean(text))
}

/// How well a folded name matches a folded query: 0 starts with it, 1 a word starts with it,
/// 2 contains it.
fn rank(name: &str, query: &str) -> Option<u8> {
    if name.starts_with(query) {
        Some(0)
    } else if name
        .match_indices(query)
        .any(|(at, _)| name[..at].ends_with(|c: char| !c.is_alphanumeric()))
    {
        Some(1)
    } else if name.contains(query) {
        Some(2)
    } else {
        None
    }
}

impl Chat {
    /// Users other than `caller` whose name contains `query` (or whose address is `query`),
    /// best matches first, at most [`MAX_RESULTS`].
    pub async fn search_users(
        &self,
        caller: &UserRecord,
        query: &str,
        now: Millis,
    ) -> Result<Vec<FoundUser>, ChatError> {
        let query = query.trim();
        if query.is_empty() {
            return Err(ChatError::Invalid("q is required".to_owned()));
        }
        if query.chars().count() > MAX_QUERY {
            return Err(ChatError::Invalid(format!(
                "q must be at most {MAX_QUERY} characters"
            )));
        }
        let folded = fold(query);
        let address = accounts::normalise_email(query);
        let mut found: Vec<(u8, String, UserRecord)> = self
            .store
            .users()
            .await?
            .into_iter()
            .filter(|user| user.id != caller.id)
            .filter_map(|user| {
                let name = fold(&user.full_name);
                let by_name = (!folded.is_empty()).then(|| rank(&name, &folded)).flatten();
                let by_address = address
                    .as_deref()
                    .is_some_and(|address| address == user.email)
                    .then_some(0);
                by_name.or(by_address).map(|rank| (rank, name, user))
            })
            .collect();
        found.sort_by(|a, b| (a.0, &a.1, &a.2.id).cmp(&(b.0, &b.1, &b.2.id)));
        found.truncate(MAX_RESULTS);
        let blockers = self.store.blockers_of(&caller.id).await?;
        let presence: Vec<Presence> = found
            .iter()
            .map(|(_, _, user)| {
                Presence::of(
                    self.delivery.is_online(&user.id),
                    blockers.binary_search(&user.id).is_ok(),
                )
            })
            .collect();
        let ids: Vec<(&str, Presence)> = found
            .iter()
            .zip(&presence)
            .map(|((_, _, user), presence)| (user.id.as_str(), *presence))
            .collect();
        let times = self.last_seen(&ids, now).await?;
        Ok(found
            .into_iter()
            .zip(presence)
            .zip(times)
            .map(|(((_, _, user), presence), last_seen)| FoundUser {
                user,
                online: presence == Presence::Online,
                last_seen,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_drops_case_and_accents() {
        assert_eq!(fold("Zoë Hélène"), "zoe helene");
        assert_eq!(fold("ÅNGSTRÖM"), "angstrom");
        assert_eq!(fold("Ana\u{200B}ïs"), "anais");
        assert_eq!(fold("ﬁona"), "fiona");
    }

    #[test]
    fn prefixes_rank_before_words_before_substrings() {
        assert_eq!(rank("helene martin", "hel"), Some(0));
        assert_eq!(rank("anne helene", "hel"), Some(1));
        assert_eq!(rank("michelle", "hel"), Some(2));
        assert_eq!(rank("bob", "hel"), None);
    }
}
