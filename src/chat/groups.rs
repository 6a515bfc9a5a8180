//! Groups: conversations with a name, an admin and members.
//!
//! The rules: anyone may create a group (and is its admin and first member) or join one; only
//! the admin adds or removes others, changes the name, description or picture, or hands the admin
//! to another member; any member may leave (an admin who leaves hands the admin to the oldest
//! remaining member, the last one to leave deletes the group). To anyone who is not a member a
//! group does not exist: every read and change answers "Group not found", and no event of the
//! group reaches them. Every membership change leaves a system message in the group, saved in the
//! same atomic write as the change.
//!
//! Group messages travel like direct ones: `send_to_group` validates and queues a
//! `process-message` job whose group is the group id (so a group's messages are saved and
//! delivered in send order), and the processor saves the message and delivers `newGroupMessage`
//! to every member's sockets. Membership for fan-out comes from the store's group record, which
//! the stores keep in memory (see `ChatStore::group`), so a message to a big group costs one
//! lookup, one serialisation and one pointer per socket.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;

use super::delivery::ChatEvent;
use super::error::ChatError;
use super::messages::MessageJob;
use super::{ids, images, names, Chat};
use crate::queue::{JobContext, JobResult};
use crate::store::chat::{HistoryPage, MessageRecord, NewMessage, UserRecord};
use crate::store::chat_groups::{
    GroupChange, GroupRecord, GroupUpdate, GroupUpdated, MAX_GROUP_MEMBERS, MAX_GROUP_SEARCH,
};

/// Longest group name and description, in characters.
pub const MAX_GROUP_NAME: usize = 100;
pub const MAX_GROUP_DESCRIPTION: usize = 500;
/// Longest search query, in characters.
pub const MAX_GROUP_QUERY: usize = 100;

const NOT_FOUND: &str = "Group not found";

/// A member as others see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: String,
    pub full_name: String,
    pub profile_pic: String,
}

impl MemberInfo {
    fn of(user: &UserRecord) -> MemberInfo {
        MemberInfo {
            id: user.id.clone(),
            full_name: names::clean(&user.full_name),
            profile_pic: user.profile_pic.clone(),
        }
    }

    /// A member whose account is gone (deleted while a message was on its way).
    fn unknown(id: &str) -> MemberInfo {
        MemberInfo {
            id: id.to_owned(),
            full_name: "Deleted user".to_owned(),
            profile_pic: String::new(),
        }
    }
}

/// A group with its members resolved, as the routes answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupView {
    pub group: Arc<GroupRecord>,
    /// In join order; accounts deleted meanwhile are left out.
    pub members: Vec<MemberInfo>,
    pub admin: MemberInfo,
    pub last_message: Option<GroupMessage>,
    pub unread: u64,
}

/// A group message with its sender (the MERN client shows names and pictures) and the preview
/// of the message it replies to resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMessage {
    pub message: MessageRecord,
    pub reply: Option<super::ReplyPreview>,
    pub sender: MemberInfo,
}

/// `POST /api/groups`.
pub struct NewGroup {
    pub name: String,
    pub description: Option<String>,
    pub members: Vec<String>,
}

/// `PUT /api/groups/:groupId`: the fields given change.
pub struct GroupDetails {
    pub name: Option<String>,
    pub description: Option<String>,
    /// A data URL (uploaded like a profile picture), or empty to remove the picture.
    pub profile_pic: Option<String>,
}

fn check_group_name(name: &str) -> Result<String, ChatError> {
    let cleaned = names::clean(name);
    if cleaned.is_empty() {
        return Err(ChatError::Invalid("Group name is required".to_owned()));
    }
    if cleaned.chars().count() > MAX_GROUP_NAME {
        return Err(ChatError::Invalid(format!(
            "Group name must be at most {MAX_GROUP_NAME} characters"
        )));
    }
    Ok(cleaned)
}

fn check_description(description: &str) -> Result<String, ChatError> {
    let trimmed = description.trim();
    if trimmed.chars().count() > MAX_GROUP_DESCRIPTION {
        return Err(ChatError::Invalid(format!(
            "Group description must be at most {MAX_GROUP_DESCRIPTION} characters"
        )));
    }
    Ok(trimmed.to_owned())
}

fn check_group_id(id: &str) -> Result<(), ChatError> {
    if ids::is_id(id) {
        Ok(())
    } else {
        Err(ChatError::Invalid("invalid group id".to_owned()))
    }
}

fn check_user_id(id: &str) -> Result<(), ChatError> {
    if ids::is_id(id) {
        Ok(())
    } else {
        Err(ChatError::Invalid("invalid user id".to_owned()))
    }
}

fn members_of(group: &GroupRecord) -> Vec<&str> {
    group.members.iter().map(String::as_str).collect()
}

impl Chat {
    /// The group, if `user` is a member; "Group not found" otherwise (also for a malformed id).
    pub(super) async fn member_group(
        &self,
        user: &str,
        group_id: &str,
    ) -> Result<Arc<GroupRecord>, ChatError> {
        check_group_id(group_id)?;
        match self.store.group(group_id).await? {
            Some(group) if group.is_member(user) => Ok(group),
            _ => Err(ChatError::NotFound(NOT_FOUND.to_owned())),
        }
    }

    /// Whether `user` may see messages of group `group_id` (the authorization of every group
    /// message read and event).
    pub async fn is_group_member(&self, user: &str, group_id: &str) -> Result<bool, ChatError> {
        Ok(self
            .store
            .group(group_id)
            .await?
            .is_some_and(|group| group.is_member(user)))
    }

    /// The members of group `group_id` now (none if there is no such group).
    pub(super) async fn current_members(&self, group_id: &str) -> Result<Vec<String>, ChatError> {
        Ok(self
            .store
            .group(group_id)
            .await?
            .map(|group| group.members.clone())
            .unwrap_or_default())
    }

    async fn member_info(&self, id: &str) -> Result<MemberInfo, ChatError> {
        Ok(match self.store.user_by_id(id).await? {
            Some(user) => MemberInfo::of(&user),
            None => MemberInfo::unknown(id),
        })
    }

    async fn group_view(
        &self,
        group: Arc<GroupRecord>,
        last_message: Option<MessageRecord>,
        unread: u64,
    ) -> Result<GroupView, ChatError> {
        let mut members = Vec::with_capacity(group.members.len());
        for id in &group.members {
            if let Some(user) = self.store.user_by_id(id).await? {
                members.push(MemberInfo::of(&user));
            }
        }
        let admin = members
            .iter()
            .find(|member| member.id == group.admin)
            .cloned()
            .unwrap_or_else(|| MemberInfo::unknown(&group.admin));
        let last_message = match last_message {
            Some(message) => Some(self.group_message(message).await?),
            None => None,
        };
        Ok(GroupView {
            group,
            members,
            admin,
            last_message,
            unread,
        })
    }

    async fn group_message(&self, message: MessageRecord) -> Result<GroupMessage, ChatError> {
        let sender = self.member_info(&message.sender_id).await?;
        let view = self.view(message).await?;
        Ok(GroupMessage {
            message: view.message,
            reply: view.reply,
            sender,
        })
    }

    /// The groups `user` is in, latest activity first, with unread counts and last messages.
    pub async fn groups(&self, user: &UserRecord) -> Result<Vec<GroupView>, ChatError> {
        let summaries = self.store.groups_of(&user.id).await?;
        let mut views = Vec::with_capacity(summaries.len());
        for summary in summaries {
            views.push(
                self.group_view(summary.group, summary.last_message, summary.unread)
                    .await?,
            );
        }
        Ok(views)
    }

    /// One group, for a member.
    pub async fn group(&self, user: &UserRecord, group_id: &str) -> Result<GroupView, ChatError> {
        let group = self.member_group(&user.id, group_id).await?;
        self.group_view(group, None, 0).await
    }

    /// Creates a group: `creator` is its admin and first member, then `members` in the order
    /// given (duplicates and the creator dropped).
    pub async fn create_group(
        &self,
        creator: &UserRecord,
        request: NewGroup,
    ) -> Result<GroupView, ChatError> {
        let name = check_group_name(&request.name)?;
        let description = check_description(request.description.as_deref().unwrap_or(""))?;
        let mut members = vec![creator.id.clone()];
        let mut seen: HashSet<&str> = HashSet::from([creator.id.as_str()]);
        if request.members.len() >= MAX_GROUP_MEMBERS {
            return Err(ChatError::Invalid(format!(
                "A group has at most {MAX_GROUP_MEMBERS} members"
            )));
        }
        for id in &request.members {
            if !seen.insert(id.as_str()) {
                continue;
            }
            if !ids::is_id(id) || self.store.user_by_id(id).await?.is_none() {
                return Err(ChatError::Invalid(format!("{id:?} is not a user")));
            }
            members.push(id.clone());
        }
        let now = self.clock.now();
        let group = GroupRecord {
            id: ids::new_id(),
            name,
            description,
            profile_pic: String::new(),
            admin: creator.id.clone(),
            members,
            created_at: now,
            updated_at: now,
        };
        let text = format!(
            "{} created the group \"{}\"",
            names::clean(&creator.full_name),
            group.name
        );
        let system = self.system_message(&group.id, &creator.id, text);
        let system_id = system.id.clone();
        if !self.store.create_group(group.clone(), Some(system)).await? {
            return Err(ChatError::Internal("group id collision".to_owned()));
        }
        let group = Arc::new(group);
        let view = self.group_view(Arc::clone(&group), None, 0).await?;
        self.announce(&group, &view).await;
        if let Some(message) = self.store.message(&system_id).await? {
            self.deliver_group_message(&group, message).await;
        }
        Ok(view)
    }

    /// Groups `user` may join whose name contains `query` (case and accents ignored).
    pub async fn search_groups(
        &self,
        user: &UserRecord,
        query: &str,
    ) -> Result<Vec<GroupView>, ChatError> {
        let query = query.trim();
        if query.is_empty() || query.chars().count() > MAX_GROUP_QUERY {
            return Err(ChatError::Invalid(format!(
                "q must be 1 to {MAX_GROUP_QUERY} characters"
            )));
        }
        let found = self
            .store
            .search_groups(query, &user.id, MAX_GROUP_SEARCH)
            .await?;
        let mut views = Vec::with_capacity(found.len());
        for group in found {
            views.push(self.group_view(group, None, 0).await?);
        }
        Ok(views)
    }

    /// `user` joins a group (any group can be joined; a member joining again is refused).
    pub async fn join_group(
        &self,
        user: &UserRecord,
        group_id: &str,
    ) -> Result<GroupView, ChatError> {
        check_group_id(group_id)?;
        let text = format!("{} joined the group", names::clean(&user.full_name));
        self.change_group(
            user,
            group_id,
            GroupChange::AddMember(user.id.clone()),
            false,
            Some(text),
        )
        .await
    }

    /// The admin adds `user_id`.
    pub async fn add_group_member(
        &self,
        actor: &UserRecord,
        group_id: &str,
        user_id: &str,
    ) -> Result<GroupView, ChatError> {
        let group = self.member_group(&actor.id, group_id).await?;
        if group.admin != actor.id {
            return Err(only_admin());
        }
        let Some(added) = self.user_if_id(user_id).await? else {
            return Err(ChatError::NotFound("User not found".to_owned()));
        };
        let text = format!(
            "{} added {}",
            names::clean(&actor.full_name),
            names::clean(&added.full_name)
        );
        self.change_group(
            actor,
            group_id,
            GroupChange::AddMember(added.id),
            true,
            Some(text),
        )
        .await
    }

    /// The admin removes `user_id`, or a member removes themselves (leaves). Returns the group
    /// as it is now (`None` when the last member left and it is gone).
    pub async fn remove_group_member(
        &self,
        actor: &UserRecord,
        group_id: &str,
        user_id: &str,
    ) -> Result<Option<GroupView>, ChatError> {
        let group = self.member_group(&actor.id, group_id).await?;
        check_user_id(user_id)?;
        let leaving = actor.id == user_id;
        if !leaving && group.admin != actor.id {
            return Err(only_admin());
        }
        let text = if leaving {
            format!("{} left the group", names::clean(&actor.full_name))
        } else {
            let removed = self.member_info(user_id).await?;
            format!(
                "{} removed {}",
                names::clean(&actor.full_name),
                removed.full_name
            )
        };
        let change = GroupChange::RemoveMember(user_id.to_owned());
        match self
            .change_group(actor, group_id, change, !leaving, Some(text))
            .await
        {
            Ok(view) => Ok(Some(view)),
            Err(ChatError::NotFound(message)) if leaving && message == GONE => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The admin changes the name, description or picture.
    pub async fn update_group(
        &self,
        actor: &UserRecord,
        group_id: &str,
        details: GroupDetails,
    ) -> Result<GroupView, ChatError> {
        let before = self.member_group(&actor.id, group_id).await?;
        if before.admin != actor.id {
            return Err(only_admin());
        }
        let name = details.name.as_deref().map(check_group_name).transpose()?;
        let description = details
            .description
            .as_deref()
            .map(check_description)
            .transpose()?;
        let profile_pic = match details.profile_pic.as_deref() {
            None => None,
            Some("") => Some(String::new()),
            Some(url) if url.starts_with("data:") => {
                let (bytes, _kind) = images::decode_data_url(url)?;
                let hash = self.uploads.put(bytes).await?;
                Some(self.host.publish(&self.uploads, &hash).await?)
            }
            Some(_) => {
                return Err(ChatError::Invalid(
                    "profilePic must be an image as a data URL".to_owned(),
                ))
            }
        };
        if name.is_none() && description.is_none() && profile_pic.is_none() {
            return Err(ChatError::Invalid(
                "Give a name, description or profilePic to change".to_owned(),
            ));
        }
        let text = match &name {
            Some(name) if *name != before.name => Some(format!(
                "{} renamed the group to \"{name}\"",
                names::clean(&actor.full_name)
            )),
            _ => None,
        };
        let change = GroupChange::Details {
            name,
            description,
            profile_pic,
        };
        self.change_group(actor, group_id, change, true, text).await
    }

    /// The admin hands the admin to another member.
    pub async fn set_group_admin(
        &self,
        actor: &UserRecord,
        group_id: &str,
        new_admin_id: &str,
    ) -> Result<GroupView, ChatError> {
        let group = self.member_group(&actor.id, group_id).await?;
        if group.admin != actor.id {
            return Err(only_admin());
        }
        check_user_id(new_admin_id)?;
        let new_admin = self.member_info(new_admin_id).await?;
        let text = format!(
            "{} made {} the admin",
            names::clean(&actor.full_name),
            new_admin.full_name
        );
        self.change_group(
            actor,
            group_id,
            GroupChange::SetAdmin(new_admin_id.to_owned()),
            true,
            Some(text),
        )
        .await
    }

    async fn user_if_id(&self, id: &str) -> Result<Option<UserRecord>, ChatError> {
        check_user_id(id)?;
        Ok(self.store.user_by_id(id).await?)
    }

    /// Applies one change (as the admin when `as_admin`) with its system message, then tells
    /// the members: `groupUpdated` to those who are in it now, `groupRemoved` to a member who
    /// went, and the system message as `newGroupMessage`.
    async fn change_group(
        &self,
        actor: &UserRecord,
        group_id: &str,
        change: GroupChange,
        as_admin: bool,
        system_text: Option<String>,
    ) -> Result<GroupView, ChatError> {
        let update = GroupUpdate {
            group_id: group_id.to_owned(),
            change,
            only_if_admin: as_admin.then(|| actor.id.clone()),
            system_message: system_text.map(|text| self.system_message(group_id, &actor.id, text)),
            now: self.clock.now(),
        };
        let (group, previous_members, system_message) =
            match self.store.update_group(update).await? {
                GroupUpdated::Changed {
                    group,
                    previous_members,
                    system_message,
                } => (group, previous_members, system_message),
                GroupUpdated::NoGroup => return Err(ChatError::NotFound(NOT_FOUND.to_owned())),
                GroupUpdated::NotAdmin => return Err(only_admin()),
                GroupUpdated::AlreadyMember => {
                    return Err(ChatError::Invalid(
                        "That user is already a member".to_owned(),
                    ))
                }
                GroupUpdated::NotMember => {
                    return Err(ChatError::Invalid(
                        "That user is not a member of the group".to_owned(),
                    ))
                }
                GroupUpdated::Full => {
                    return Err(ChatError::Invalid(format!(
                        "A group has at most {MAX_GROUP_MEMBERS} members"
                    )))
                }
            };
        let gone: Vec<&str> = previous_members
            .iter()
            .filter(|member| group.as_ref().is_none_or(|group| !group.is_member(member)))
            .map(String::as_str)
            .collect();
        if !gone.is_empty() {
            self.delivery.deliver(
                &gone,
                ChatEvent::GroupRemoved {
                    group_id: group_id.to_owned(),
                },
            );
        }
        let Some(group) = group else {
            return Err(ChatError::NotFound(GONE.to_owned()));
        };
        let view = self.group_view(Arc::clone(&group), None, 0).await?;
        self.announce(&group, &view).await;
        if let Some(message) = system_message {
            self.deliver_group_message(&group, *message).await;
        }
        Ok(view)
    }

    /// `groupUpdated` to every member.
    async fn announce(&self, group: &GroupRecord, view: &GroupView) {
        self.delivery.deliver(
            &members_of(group),
            ChatEvent::GroupUpdated(Box::new(view.clone())),
        );
    }

    async fn deliver_group_message(&self, group: &GroupRecord, message: MessageRecord) {
        let message = match self.group_message(message.clone()).await {
            Ok(message) => message,
            Err(err) => {
                tracing::warn!(error = %err, "cannot resolve a group message's sender");
                GroupMessage {
                    sender: MemberInfo::unknown(&message.sender_id),
                    reply: None,
                    message,
                }
            }
        };
        self.delivery.deliver(
            &members_of(group),
            ChatEvent::NewGroupMessage(Box::new(message)),
        );
    }

    /// A group's messages, oldest first, for a member.
    pub async fn group_history(
        &self,
        user: &UserRecord,
        group_id: &str,
        page: HistoryPage,
    ) -> Result<Vec<GroupMessage>, ChatError> {
        self.member_group(&user.id, group_id).await?;
        let messages = self
            .views(self.store.group_history(group_id, page).await?)
            .await?;
        self.with_senders(messages).await
    }

    /// Messages with their senders' names and pictures, as group messages carry them.
    pub(super) async fn with_senders(
        &self,
        messages: Vec<super::MessageView>,
    ) -> Result<Vec<GroupMessage>, ChatError> {
        let mut resolved = Vec::with_capacity(messages.len());
        let mut senders: std::collections::HashMap<String, MemberInfo> = Default::default();
        for super::MessageView { message, reply } in messages {
            let sender = match senders.get(&message.sender_id) {
                Some(sender) => sender.clone(),
                None => {
                    let sender = self.member_info(&message.sender_id).await?;
                    senders.insert(message.sender_id.clone(), sender.clone());
                    sender
                }
            };
            resolved.push(GroupMessage {
                message,
                reply,
                sender,
            });
        }
        Ok(resolved)
    }

    /// Marks the group read up to its last message, for a member; returns the mark.
    pub async fn mark_group_seen(
        &self,
        user: &UserRecord,
        group_id: &str,
    ) -> Result<u64, ChatError> {
        self.member_group(&user.id, group_id).await?;
        Ok(self
            .store
            .mark_group_read(group_id, &user.id, u64::MAX)
            .await?)
    }

    /// Validates a send to a group and queues it (see `Chat::send`); only members may send.
    pub async fn send_to_group(
        &self,
        sender: &UserRecord,
        group_id: &str,
        input: super::SendInput,
    ) -> Result<super::Sent, ChatError> {
        self.member_group(&sender.id, group_id).await?;
        self.queue_send(sender, super::messages::SendTarget::Group(group_id), input)
            .await
    }

    /// `process-message` for a group message: saved if the sender is still a member, then
    /// delivered to the members of that moment.
    pub(super) async fn process_group_message(
        self: Arc<Self>,
        job: JobContext,
        data: MessageJob,
        group_id: String,
    ) -> JobResult {
        let Some(group) = self.store.group(&group_id).await.map_err(failure)? else {
            return Ok(json!({ "saved": false, "reason": "the group was deleted" }));
        };
        if !group.is_member(&data.sender_id) {
            return Ok(json!({ "saved": false, "reason": "the sender left the group" }));
        }
        let image = match &data.image_hash {
            Some(hash) => {
                job.progress(json!(10)).await?;
                let url = self
                    .host
                    .publish(&self.uploads, hash)
                    .await
                    .map_err(failure)?;
                job.progress(json!(50)).await?;
                url
            }
            None => String::new(),
        };
        let saved = self
            .store
            .save_message(self.group_new_message(&data, &group_id, image))
            .await;
        let (message, inserted) = match saved {
            Ok(saved) => saved,
            Err(crate::store::StoreError::Deleted(_)) => {
                return Ok(json!({ "saved": false, "reason": "the account was deleted" }));
            }
            Err(err) => return Err(err.into()),
        };
        if !inserted {
            job.log(format!(
                "message {} was already saved (seq {}): not saving again",
                message.id, message.seq
            ))
            .await?;
        }
        // The members now (a member removed while the message waited gets nothing).
        let group = self
            .store
            .group(&group_id)
            .await
            .map_err(failure)?
            .unwrap_or(group);
        let seq = message.seq;
        self.deliver_group_message(&group, message).await;
        Ok(json!({ "messageId": data.message_id, "seq": seq }))
    }
}

impl Chat {
    /// A system message of `actor`'s in a group (a membership or name change).
    fn system_message(&self, group_id: &str, actor: &str, text: String) -> NewMessage {
        NewMessage {
            id: ids::new_id(),
            sender_id: actor.to_owned(),
            text,
            created_at: self.clock.now(),
            group_id: Some(group_id.to_owned()),
            system: true,
            ..NewMessage::default()
        }
    }

    /// The message a group message job saves.
    fn group_new_message(&self, data: &MessageJob, group_id: &str, image: String) -> NewMessage {
        NewMessage {
            id: data.message_id.clone(),
            sender_id: data.sender_id.clone(),
            text: data.text.clone(),
            image,
            created_at: data.created_at,
            group_id: Some(group_id.to_owned()),
            reply_to: data.reply_to.clone(),
            attachment: data.attachment.clone(),
            ..NewMessage::default()
        }
    }
}

/// The refusal a removal by the last member turns into (the group is gone).
const GONE: &str = "The group was deleted";

fn only_admin() -> ChatError {
    ChatError::Refused("Only the group admin can do that".to_owned())
}

fn failure(err: impl Into<ChatError>) -> crate::queue::JobFailure {
    crate::queue::JobFailure::from(err.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_cleaned_and_bounded() {
        assert_eq!(check_group_name("  Team \u{202E}A ").unwrap(), "Team A");
        assert!(check_group_name(" \u{200B} ").is_err());
        assert!(check_group_name(&"x".repeat(MAX_GROUP_NAME + 1)).is_err());
        assert!(check_description(&"x".repeat(MAX_GROUP_DESCRIPTION + 1)).is_err());
        assert_eq!(check_description("  hi ").unwrap(), "hi");
    }
}
