//! Wire types shared by HTTP and WebSocket: the MERN chat app's JSON shapes.
//!
//! Field names (`_id`, `fullName`, `profilePic`, `senderId`, ...) and ISO-8601 timestamps match
//! the app Courier replaces, so its front ends work unchanged. Never a password hash.

use serde::Serialize;

use crate::chat::{
    names, GroupMessage, GroupView, MemberInfo, MessageView, ReplyPreview, SidebarEntry,
};
use crate::store::chat::{MessageRecord, Reaction, UserRecord};
use crate::time::iso_time;

#[derive(Debug, Clone, Serialize)]
pub struct UserJson {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "fullName")]
    pub full_name: String,
    pub email: String,
    #[serde(rename = "profilePic")]
    pub profile_pic: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
    /// The signed-in user is seen now (this JSON only ever describes the caller).
    #[serde(rename = "lastSeen")]
    pub last_seen: String,
}

impl From<&UserRecord> for UserJson {
    fn from(user: &UserRecord) -> UserJson {
        UserJson {
            id: user.id.clone(),
            // Names saved before bidi controls were refused still display safely.
            full_name: names::clean(&user.full_name),
            email: user.email.clone(),
            profile_pic: user.profile_pic.clone(),
            created_at: iso_time(user.created_at),
            updated_at: iso_time(user.updated_at),
            last_seen: iso_time(crate::time::now_millis()),
        }
    }
}

/// Another user as anyone may see them: no e-mail address.
#[derive(Debug, Clone, Serialize)]
pub struct PublicUserJson {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "fullName")]
    pub full_name: String,
    #[serde(rename = "profilePic")]
    pub profile_pic: String,
}

impl From<&UserRecord> for PublicUserJson {
    fn from(user: &UserRecord) -> PublicUserJson {
        PublicUserJson {
            id: user.id.clone(),
            full_name: names::clean(&user.full_name),
            profile_pic: user.profile_pic.clone(),
        }
    }
}

/// A message, with the MERN app's field names. A deleted one keeps its place with
/// `isDeleted` and empty content; a group message has `groupId` and no `receiverId`.
#[derive(Debug, Clone, Serialize)]
pub struct MessageJson {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "senderId")]
    pub sender_id: String,
    #[serde(rename = "receiverId")]
    pub receiver_id: Option<String>,
    #[serde(rename = "groupId")]
    pub group_id: Option<String>,
    pub text: String,
    pub image: String,
    pub seq: u64,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
    #[serde(rename = "replyTo")]
    pub reply_to: Option<ReplyJson>,
    #[serde(rename = "fileUrl")]
    pub file_url: Option<String>,
    #[serde(rename = "fileName")]
    pub file_name: Option<String>,
    #[serde(rename = "fileSize")]
    pub file_size: Option<u64>,
    #[serde(rename = "fileType")]
    pub file_type: Option<String>,
    #[serde(rename = "mimeType")]
    pub mime_type: Option<String>,
    #[serde(rename = "isEdited")]
    pub is_edited: bool,
    #[serde(rename = "editHistory")]
    pub edit_history: Vec<EditJson>,
    #[serde(rename = "isDeleted")]
    pub is_deleted: bool,
    #[serde(rename = "deletedAt")]
    pub deleted_at: Option<String>,
    pub reactions: Vec<ReactionJson>,
    #[serde(rename = "isSystemMessage")]
    pub is_system_message: bool,
    /// The change stamp of the message's save or last change: `?updatedAfter=` takes the
    /// highest one a client has seen.
    #[serde(rename = "changeSeq")]
    pub change_seq: u64,
}

/// A previous text of an edited message.
#[derive(Debug, Clone, Serialize)]
pub struct EditJson {
    pub text: String,
    #[serde(rename = "editedAt")]
    pub edited_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReactionJson {
    pub emoji: String,
    pub users: Vec<String>,
    pub count: usize,
}

impl From<&Reaction> for ReactionJson {
    fn from(reaction: &Reaction) -> ReactionJson {
        ReactionJson {
            emoji: reaction.emoji.clone(),
            users: reaction.users.clone(),
            count: reaction.users.len(),
        }
    }
}

/// What a reply shows of the message it answers (`replyTo`).
#[derive(Debug, Clone, Serialize)]
pub struct ReplyJson {
    #[serde(rename = "_id")]
    pub id: String,
    pub text: String,
    pub image: String,
    #[serde(rename = "isDeleted")]
    pub is_deleted: bool,
    #[serde(rename = "senderId")]
    pub sender: ReplySenderJson,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplySenderJson {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "fullName")]
    pub full_name: String,
}

impl From<&ReplyPreview> for ReplyJson {
    fn from(reply: &ReplyPreview) -> ReplyJson {
        ReplyJson {
            id: reply.id.clone(),
            text: reply.text.clone(),
            image: reply.image.clone(),
            is_deleted: reply.deleted,
            sender: ReplySenderJson {
                id: reply.sender_id.clone(),
                full_name: reply.sender_name.clone(),
            },
        }
    }
}

/// A message without its reply preview (`replyTo` is null): the sidebar's last message.
impl From<&MessageRecord> for MessageJson {
    fn from(message: &MessageRecord) -> MessageJson {
        let attachment = message.attachment.as_ref();
        MessageJson {
            id: message.id.clone(),
            sender_id: message.sender_id.clone(),
            receiver_id: message
                .group_id
                .is_none()
                .then(|| message.receiver_id.clone()),
            group_id: message.group_id.clone(),
            text: message.text.clone(),
            image: message.image.clone(),
            seq: message.seq,
            created_at: iso_time(message.created_at),
            updated_at: iso_time(message.updated_at),
            reply_to: None,
            file_url: attachment.map(|file| file.url.clone()),
            file_name: attachment.map(|file| file.name.clone()),
            file_size: attachment.map(|file| file.size),
            file_type: attachment.map(|file| file.file_type.clone()),
            mime_type: attachment.map(|file| file.mime_type.clone()),
            is_edited: message.edited_at.is_some(),
            edit_history: message
                .edit_history
                .iter()
                .map(|edit| EditJson {
                    text: edit.text.clone(),
                    edited_at: iso_time(edit.edited_at),
                })
                .collect(),
            is_deleted: message.is_deleted(),
            deleted_at: message.deleted_at.map(iso_time),
            reactions: message.reactions.iter().map(ReactionJson::from).collect(),
            is_system_message: message.system,
            change_seq: message.change,
        }
    }
}

impl From<&MessageView> for MessageJson {
    fn from(view: &MessageView) -> MessageJson {
        MessageJson {
            reply_to: view.reply.as_ref().map(ReplyJson::from),
            ..MessageJson::from(&view.message)
        }
    }
}

/// A sidebar row: the user (without their e-mail address) plus presence, unread count and last
/// message.
#[derive(Debug, Clone, Serialize)]
pub struct SidebarUserJson {
    #[serde(flatten)]
    pub user: PublicUserJson,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    pub online: bool,
    #[serde(rename = "unreadCount")]
    pub unread_count: u64,
    /// The `seq` this user has read up to in the conversation with the caller (read receipts).
    #[serde(rename = "readByOtherUpTo")]
    pub read_by_other_up_to: u64,
    #[serde(rename = "lastMessage")]
    pub last_message: Option<MessageJson>,
    /// Whether the caller blocks this user.
    #[serde(rename = "isBlocked")]
    pub is_blocked: bool,
    /// Present when another listed user's name looks the same: shown beside the name.
    #[serde(rename = "nameTag", skip_serializing_if = "Option::is_none")]
    pub name_tag: Option<String>,
    /// Now when online, else the latest use of their sessions; `null` when unknown or hidden.
    #[serde(rename = "lastSeen")]
    pub last_seen: Option<String>,
}

impl From<&SidebarEntry> for SidebarUserJson {
    fn from(entry: &SidebarEntry) -> SidebarUserJson {
        SidebarUserJson {
            user: PublicUserJson::from(&entry.user),
            created_at: iso_time(entry.user.created_at),
            online: entry.online,
            unread_count: entry.unread,
            read_by_other_up_to: entry.read_by_other,
            last_message: entry.last_message.as_ref().map(MessageJson::from),
            is_blocked: entry.blocked,
            name_tag: entry.name_tag.clone(),
            last_seen: entry.last_seen.map(iso_time),
        }
    }
}

/// A group member or admin, as the MERN app populates them.
#[derive(Debug, Clone, Serialize)]
pub struct MemberJson {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "fullName")]
    pub full_name: String,
    #[serde(rename = "profilePic")]
    pub profile_pic: String,
}

impl From<&MemberInfo> for MemberJson {
    fn from(member: &MemberInfo) -> MemberJson {
        MemberJson {
            id: member.id.clone(),
            full_name: member.full_name.clone(),
            profile_pic: member.profile_pic.clone(),
        }
    }
}

/// A group message: the message's own JSON with `senderId` populated as a [`MemberJson`] (the
/// MERN client reads names and pictures from it in groups; direct messages keep a flat id).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct GroupMessageJson(serde_json::Value);

impl From<&GroupMessage> for GroupMessageJson {
    fn from(message: &GroupMessage) -> GroupMessageJson {
        let view = MessageView {
            message: message.message.clone(),
            reply: message.reply.clone(),
        };
        let mut json =
            serde_json::to_value(MessageJson::from(&view)).unwrap_or(serde_json::Value::Null);
        if let Some(fields) = json.as_object_mut() {
            // The message JSON may carry these already; a group message always does.
            fields
                .entry("groupId")
                .or_insert_with(|| serde_json::Value::from(message.message.group_id.clone()));
            fields
                .entry("isSystemMessage")
                .or_insert(serde_json::Value::Bool(message.message.system));
            fields.insert(
                "senderId".to_owned(),
                serde_json::to_value(MemberJson::from(&message.sender))
                    .unwrap_or(serde_json::Value::Null),
            );
        }
        GroupMessageJson(json)
    }
}

/// A group as the MERN app answers it, with the caller's `unreadCount` and the `lastMessage`
/// (0 and null outside the group list).
#[derive(Debug, Clone, Serialize)]
pub struct GroupJson {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "profilePic")]
    pub profile_pic: String,
    pub admin: MemberJson,
    pub members: Vec<MemberJson>,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
    #[serde(rename = "unreadCount")]
    pub unread_count: u64,
    #[serde(rename = "lastMessage")]
    pub last_message: Option<GroupMessageJson>,
}

impl From<&GroupView> for GroupJson {
    fn from(view: &GroupView) -> GroupJson {
        GroupJson {
            id: view.group.id.clone(),
            name: names::clean(&view.group.name),
            description: view.group.description.clone(),
            profile_pic: view.group.profile_pic.clone(),
            admin: MemberJson::from(&view.admin),
            members: view.members.iter().map(MemberJson::from).collect(),
            created_at: iso_time(view.group.created_at),
            updated_at: iso_time(view.group.updated_at),
            unread_count: view.unread,
            last_message: view.last_message.as_ref().map(GroupMessageJson::from),
        }
    }
}

/// What a group frame carries (`newGroupMessage`, `groupUpdated`): one type, so the frame type
/// keeps a single parameter.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum GroupEventJson {
    Message(GroupMessageJson),
    Group(Box<GroupJson>),
}
