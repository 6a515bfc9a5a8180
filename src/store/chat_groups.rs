//! The stored shape of groups and the requests of the group methods of [`ChatStore`].
//!
//! A group is a conversation with a name, an admin and members; its messages live in the chat
//! store like direct ones, in the conversation whose key is the group id (direct conversation keys
//! are `a:b`, and ids never contain `:`, so the two never meet). The group methods are one block at
//! the end of [`ChatStore`] rather than a trait of their own: a membership change and the system
//! message that tells the group about it are one atomic write, which only the store that numbers
//! the group's messages can make, and deleting a user must take them out of their groups in the
//! same write that deletes the account.
//!
//! [`ChatStore`]: super::chat::ChatStore

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::chat::{MessageRecord, NewMessage};
use super::job::Millis;

/// A stored group (format 1, frozen by a golden-bytes test below).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    /// URL of the group's picture, or empty.
    pub profile_pic: String,
    /// The member who may change the group; always one of `members`.
    pub admin: String,
    /// Member ids in the order they joined: the first is the oldest member (who becomes admin
    /// when the admin leaves).
    pub members: Vec<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl GroupRecord {
    pub fn is_member(&self, user: &str) -> bool {
        self.members.iter().any(|member| member == user)
    }
}

/// One change to a group. The store applies it to the latest record, under its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    /// New name, description or picture (those given); already checked by the domain.
    Details {
        name: Option<String>,
        description: Option<String>,
        profile_pic: Option<String>,
    },
    /// Adds a member (at the end: the newest).
    AddMember(String),
    /// Removes a member. An admin who goes hands the admin to the oldest remaining member; the
    /// last member who goes deletes the group with its messages and read marks.
    RemoveMember(String),
    /// Makes a member the admin.
    SetAdmin(String),
}

/// A change to a group, applied only if the group is as the caller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupUpdate {
    pub group_id: String,
    pub change: GroupChange,
    /// Apply only while this user is the admin (the domain's check, made again atomically with
    /// the write so that a concurrent admin change cannot slip between the two).
    pub only_if_admin: Option<String>,
    /// Saved in the group's conversation in the same atomic write as the change, when it applies
    /// (its `group_id` must be the group's; it gets the conversation's next `seq`).
    pub system_message: Option<NewMessage>,
    pub now: Millis,
}

/// What [`GroupUpdate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupUpdated {
    /// Applied. `group` is `None` when the last member left and the group is gone.
    Changed {
        group: Option<Arc<GroupRecord>>,
        /// The members before the change (a removed member is among them, not in `group`).
        previous_members: Vec<String>,
        /// Boxed: the refusals are small.
        system_message: Option<Box<MessageRecord>>,
    },
    NoGroup,
    /// `only_if_admin` is not the admin (any more).
    NotAdmin,
    /// `AddMember` of a member.
    AlreadyMember,
    /// `RemoveMember` or `SetAdmin` of someone who is not a member.
    NotMember,
    /// `AddMember` past the group's member limit.
    Full,
}

/// One group as `user`'s list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub group: Arc<GroupRecord>,
    pub last_message: Option<MessageRecord>,
    /// Messages from other members (system messages included) above `user`'s read mark.
    pub unread: u64,
}

impl GroupSummary {
    /// When the group last saw activity: its last message, else its creation.
    pub fn last_activity(&self) -> Millis {
        self.last_message
            .as_ref()
            .map_or(self.group.created_at, |message| message.created_at)
    }
}

/// Most members a group may have; `AddMember` past it is [`GroupUpdated::Full`].
pub const MAX_GROUP_MEMBERS: usize = 10_000;

/// Most groups one search returns.
pub const MAX_GROUP_SEARCH: usize = 50;

/// How a group name is compared in searches: lowercase, accents and white space runs folded, so
/// "Équipe  Café" is found by "equipe cafe".
pub fn fold_name(name: &str) -> String {
    use icu_normalizer::DecomposingNormalizerBorrowed;
    let decomposed = DecomposingNormalizerBorrowed::new_nfd().normalize(name);
    let mut folded = String::with_capacity(name.len());
    let mut pending_space = false;
    for c in decomposed.chars().filter(|c| !is_combining_mark(*c)) {
        if c.is_whitespace() {
            pending_space = !folded.is_empty();
            continue;
        }
        if pending_space {
            folded.push(' ');
            pending_space = false;
        }
        folded.extend(c.to_lowercase());
    }
    folded
}

/// The combining diacritical marks a decomposition leaves after a base letter.
fn is_combining_mark(c: char) -> bool {
    matches!(
        c,
        '\u{0300}'..='\u{036F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE20}'..='\u{FE2F}'
    )
}

/// Applies `update`'s change to `group` (the latest record), as both backends must: the rules of
/// [`GroupChange`] and [`GroupUpdate::only_if_admin`]. Returns the record after the change
/// (`None`: the group is gone), or the refusal.
pub fn apply_change(
    group: &GroupRecord,
    update: &GroupUpdate,
) -> Result<Option<GroupRecord>, GroupUpdated> {
    if let Some(admin) = &update.only_if_admin {
        if *admin != group.admin {
            return Err(GroupUpdated::NotAdmin);
        }
    }
    let mut changed = group.clone();
    changed.updated_at = update.now.max(group.updated_at);
    match &update.change {
        GroupChange::Details {
            name,
            description,
            profile_pic,
        } => {
            if let Some(name) = name {
                changed.name = name.clone();
            }
            if let Some(description) = description {
                changed.description = description.clone();
            }
            if let Some(profile_pic) = profile_pic {
                changed.profile_pic = profile_pic.clone();
            }
        }
        GroupChange::AddMember(user) => {
            if group.is_member(user) {
                return Err(GroupUpdated::AlreadyMember);
            }
            if group.members.len() >= MAX_GROUP_MEMBERS {
                return Err(GroupUpdated::Full);
            }
            changed.members.push(user.clone());
        }
        GroupChange::RemoveMember(user) => {
            if !group.is_member(user) {
                return Err(GroupUpdated::NotMember);
            }
            changed.members.retain(|member| member != user);
            match changed.members.first() {
                None => return Ok(None),
                Some(oldest) if changed.admin == *user => changed.admin = oldest.clone(),
                Some(_) => {}
            }
        }
        GroupChange::SetAdmin(user) => {
            if !group.is_member(user) {
                return Err(GroupUpdated::NotMember);
            }
            changed.admin = user.clone();
        }
    }
    Ok(Some(changed))
}

/// `group` without `user`, as a deleted account leaves it (`None`: it was the last member). The
/// deletion carries no time, so `updated_at` stays.
pub fn without_member(group: &GroupRecord, user: &str) -> Option<GroupRecord> {
    let update = GroupUpdate {
        group_id: group.id.clone(),
        change: GroupChange::RemoveMember(user.to_owned()),
        only_if_admin: None,
        system_message: None,
        now: group.updated_at,
    };
    apply_change(group, &update).ok().flatten()
}

/// The order of [`ChatStore::groups_of`](super::chat::ChatStore::groups_of): latest activity
/// first, then by id, on every backend.
pub fn sort_summaries(summaries: &mut [GroupSummary]) {
    summaries.sort_by(|a, b| {
        b.last_activity()
            .cmp(&a.last_activity())
            .then_with(|| a.group.id.cmp(&b.group.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::golden::golden;

    fn group() -> GroupRecord {
        GroupRecord {
            id: "g1".to_owned(),
            name: "Équipe".to_owned(),
            description: "the team".to_owned(),
            profile_pic: String::new(),
            admin: "a".to_owned(),
            members: vec!["a".to_owned(), "b".to_owned()],
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_500_000,
        }
    }

    /// The stored bytes of a group. A failing test means the disk format changed: keep the old
    /// shape decodable and add a format tag (see `store/codec.rs`), never edit the hex.
    #[test]
    fn group_record_golden_bytes() {
        golden(
            &group(),
            "0102673107c389717569706508746865207465616d0001610201610162\
             80d095ffbc31a092b4ffbc31",
        );
    }

    #[test]
    fn names_fold_case_accents_and_spacing() {
        assert_eq!(fold_name("  Équipe   Café "), "equipe cafe");
        assert_eq!(fold_name("ÅNGSTRÖM"), "angstrom");
        assert_eq!(fold_name("日本"), "日本");
    }

    fn update(change: GroupChange, only_if_admin: Option<&str>) -> GroupUpdate {
        GroupUpdate {
            group_id: "g1".to_owned(),
            change,
            only_if_admin: only_if_admin.map(str::to_owned),
            system_message: None,
            now: 1_700_000_900_000,
        }
    }

    #[test]
    fn an_admin_who_leaves_hands_over_to_the_oldest_member() {
        let mut three = group();
        three.members.push("c".to_owned());
        let left = apply_change(&three, &update(GroupChange::RemoveMember("a".into()), None))
            .unwrap()
            .unwrap();
        assert_eq!(left.admin, "b");
        assert_eq!(left.members, ["b", "c"]);
        assert_eq!(left.updated_at, 1_700_000_900_000);
        let alone = GroupRecord {
            members: vec!["a".to_owned()],
            ..group()
        };
        assert_eq!(
            apply_change(&alone, &update(GroupChange::RemoveMember("a".into()), None)),
            Ok(None)
        );
    }

    #[test]
    fn refusals_change_nothing() {
        let g = group();
        let cases = [
            (
                update(GroupChange::AddMember("c".into()), Some("b")),
                GroupUpdated::NotAdmin,
            ),
            (
                update(GroupChange::AddMember("b".into()), Some("a")),
                GroupUpdated::AlreadyMember,
            ),
            (
                update(GroupChange::RemoveMember("c".into()), None),
                GroupUpdated::NotMember,
            ),
            (
                update(GroupChange::SetAdmin("c".into()), Some("a")),
                GroupUpdated::NotMember,
            ),
        ];
        for (request, refusal) in cases {
            assert_eq!(apply_change(&g, &request), Err(refusal));
        }
        let mut full = group();
        full.members = (0..MAX_GROUP_MEMBERS).map(|i| format!("u{i}")).collect();
        full.admin = "u0".to_owned();
        assert_eq!(
            apply_change(&full, &update(GroupChange::AddMember("x".into()), None)),
            Err(GroupUpdated::Full)
        );
    }
}
