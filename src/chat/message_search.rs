//! Message search (`GET /api/messages/search`): the caller's words, found in the conversations
//! the caller belongs to and nowhere else, newest first (see `store::search` for the index).

use super::groups::GroupMessage;
use super::{ids, Chat, ChatError};
use crate::store::chat::{direct_conversation_key, UserRecord};
use crate::store::job::Millis;
use crate::store::search::{query_words, MessageKind, SearchQuery, MAX_PAGE};

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// What to search for and where.
#[derive(Debug, Clone, Default)]
pub struct MessageSearch {
    pub text: String,
    /// Only the direct conversation with this user.
    pub with_user: Option<String>,
    /// Only this group (the caller must be a member).
    pub group: Option<String>,
    pub sender: Option<String>,
    pub kind: Option<MessageKind>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    /// From 1.
    pub page: usize,
    pub limit: usize,
}

/// A page of messages found, each with its sender, and how many match in all.
#[derive(Debug, Clone)]
pub struct FoundMessages {
    pub messages: Vec<GroupMessage>,
    pub total: usize,
}

impl Chat {
    /// The messages matching `search` that `user` may read, newest first.
    pub async fn search_messages(
        &self,
        user: &UserRecord,
        search: MessageSearch,
    ) -> Result<FoundMessages, ChatError> {
        if search.text.chars().count() > MAX_QUERY_CHARS {
            return Err(ChatError::Invalid(format!(
                "search text is longer than {MAX_QUERY_CHARS} characters"
            )));
        }
        let words = query_words(&search.text);
        if words.is_empty() {
            return Err(ChatError::Invalid(
                "search for at least one letter or digit".to_owned(),
            ));
        }
        if search.limit == 0 || search.limit > MAX_PAGE || search.page == 0 {
            return Err(ChatError::Invalid(format!(
                "page starts at 1 and limit must be between 1 and {MAX_PAGE}"
            )));
        }
        let conversations = match (&search.group, &search.with_user) {
            (Some(_), Some(_)) => {
                return Err(ChatError::Invalid(
                    "search one of userId and groupId, not both".to_owned(),
                ))
            }
            (Some(group), None) => {
                self.member_group(&user.id, group).await?;
                vec![group.clone()]
            }
            (None, Some(other)) => {
                if !ids::is_id(other) || self.store.user_by_id(other).await?.is_none() {
                    return Err(ChatError::NotFound("User not found".to_owned()));
                }
                vec![direct_conversation_key(&user.id, other)]
            }
            (None, None) => {
                let mut all: Vec<String> = self
                    .store
                    .conversations(&user.id)
                    .await?
                    .iter()
                    .map(|summary| direct_conversation_key(&user.id, &summary.other_id))
                    .collect();
                all.extend(
                    self.store
                        .groups_of(&user.id)
                        .await?
                        .iter()
                        .map(|summary| summary.group.id.clone()),
                );
                all
            }
        };
        let query = SearchQuery {
            words,
            conversations,
            sender: search.sender,
            kind: search.kind,
            since: search.since,
            until: search.until,
            offset: (search.page - 1).saturating_mul(search.limit),
            limit: search.limit,
        };
        let found = match self.store.search_messages(&query).await {
            Ok(found) => found,
            Err(crate::store::StoreError::Unsupported(why)) => return Err(ChatError::Refused(why)),
            Err(err) => return Err(err.into()),
        };
        let views = self.views(found.messages).await?;
        Ok(FoundMessages {
            messages: self.with_senders(views).await?,
            total: found.total,
        })
    }
}
