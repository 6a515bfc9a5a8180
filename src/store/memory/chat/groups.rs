//! Groups in the in-memory chat store: records, each user's groups, read marks. A group's
//! messages are in the store's conversations like any others, under the group id.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::{check_id, key_safe, State};
use crate::store::chat::MessageRecord;
use crate::store::chat_groups::{
    apply_change, fold_name, without_member, GroupRecord, GroupSummary, GroupUpdate, GroupUpdated,
};
use crate::store::StoreError;

#[derive(Default)]
pub(super) struct Groups {
    records: HashMap<String, Arc<GroupRecord>>,
    /// Each user's groups.
    of_user: HashMap<String, BTreeSet<String>>,
    /// Read marks, by (group, reader).
    read_marks: HashMap<(String, String), u64>,
}

impl Groups {
    fn link(&mut self, group: &str, members: &[String]) {
        for member in members {
            self.of_user
                .entry(member.clone())
                .or_default()
                .insert(group.to_owned());
        }
    }

    fn unlink(&mut self, group: &str, members: &[String]) {
        for member in members {
            if let Some(groups) = self.of_user.get_mut(member) {
                groups.remove(group);
                if groups.is_empty() {
                    self.of_user.remove(member);
                }
            }
        }
    }
}

impl State {
    pub(super) fn create_group(
        &mut self,
        group: GroupRecord,
        system_message: Option<crate::store::chat::NewMessage>,
    ) -> Result<bool, StoreError> {
        check_id(&group.id)?;
        for member in &group.members {
            check_id(member)?;
        }
        if self.groups.records.contains_key(&group.id) {
            return Ok(false);
        }
        if let Some(message) = system_message {
            self.save_message(message)?;
        }
        self.groups.link(&group.id, &group.members);
        self.groups
            .records
            .insert(group.id.clone(), Arc::new(group));
        Ok(true)
    }

    pub(super) fn group(&self, id: &str) -> Option<Arc<GroupRecord>> {
        self.groups.records.get(id).cloned()
    }

    pub(super) fn update_group(&mut self, update: GroupUpdate) -> Result<GroupUpdated, StoreError> {
        let Some(current) = self.groups.records.get(&update.group_id).cloned() else {
            return Ok(GroupUpdated::NoGroup);
        };
        let changed = match apply_change(&current, &update) {
            Ok(changed) => changed,
            Err(refusal) => return Ok(refusal),
        };
        if let Some(member) = changed.as_ref().and_then(|group| {
            group
                .members
                .iter()
                .find(|member| !current.is_member(member))
        }) {
            check_id(member)?;
        }
        // The message first: it is the step that can fail, and nothing has changed yet.
        let system_message = match update.system_message {
            Some(message) if changed.is_some() => Some(Box::new(self.save_message(message)?.0)),
            _ => None,
        };
        self.groups.unlink(&current.id, &current.members);
        let group = match changed {
            Some(changed) => {
                self.groups.link(&changed.id, &changed.members);
                let changed = Arc::new(changed);
                self.groups
                    .records
                    .insert(changed.id.clone(), Arc::clone(&changed));
                Some(changed)
            }
            None => {
                self.remove_group(&current.id);
                None
            }
        };
        Ok(GroupUpdated::Changed {
            group,
            previous_members: current.members.clone(),
            system_message,
        })
    }

    /// Forgets a group that lost its last member, with its messages (their change index and
    /// file references too) and read marks.
    fn remove_group(&mut self, id: &str) {
        self.groups.records.remove(id);
        self.groups.read_marks.retain(|(group, _), _| group != id);
        for message in self.conversations.remove(id).unwrap_or_default() {
            self.message_ids.remove(&message.id);
            for url in message.file_refs() {
                if let Some(ids) = self.file_refs.get_mut(&url) {
                    ids.remove(&message.id);
                    if ids.is_empty() {
                        self.file_refs.remove(&url);
                    }
                }
            }
        }
        self.changes.remove(id);
        self.last_change.remove(id);
    }

    pub(super) fn groups_of(&self, user: &str) -> Vec<GroupSummary> {
        if !key_safe(user) {
            return Vec::new();
        }
        let Some(ids) = self.groups.of_user.get(user) else {
            return Vec::new();
        };
        let mut summaries: Vec<GroupSummary> = ids
            .iter()
            .filter_map(|id| self.groups.records.get(id))
            .map(|group| {
                let messages = self.group_messages(&group.id);
                let mark = self.group_read_mark(&group.id, user);
                let after_mark = messages.partition_point(|message| message.seq <= mark);
                let unread = messages
                    .get(after_mark..)
                    .unwrap_or_default()
                    .iter()
                    .filter(|message| message.sender_id != user)
                    .count() as u64;
                GroupSummary {
                    group: Arc::clone(group),
                    last_message: messages.last().cloned(),
                    unread,
                }
            })
            .collect();
        crate::store::chat_groups::sort_summaries(&mut summaries);
        summaries
    }

    pub(super) fn search_groups(
        &self,
        query: &str,
        viewer: &str,
        limit: usize,
    ) -> Vec<Arc<GroupRecord>> {
        let wanted = fold_name(query);
        let mut found: Vec<(String, Arc<GroupRecord>)> = self
            .groups
            .records
            .values()
            .filter(|group| !group.is_member(viewer))
            .map(|group| (fold_name(&group.name), Arc::clone(group)))
            .filter(|(folded, _)| folded.contains(&wanted))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        found.truncate(limit);
        found.into_iter().map(|(_, group)| group).collect()
    }

    fn group_read_mark(&self, group: &str, reader: &str) -> u64 {
        self.groups
            .read_marks
            .get(&(group.to_owned(), reader.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn mark_group_read(
        &mut self,
        group: &str,
        reader: &str,
        seq: u64,
    ) -> Result<u64, StoreError> {
        check_id(group)?;
        check_id(reader)?;
        let last = self
            .group_messages(group)
            .last()
            .map_or(0, |message| message.seq);
        let mark = self
            .groups
            .read_marks
            .entry((group.to_owned(), reader.to_owned()))
            .or_insert(0);
        *mark = (*mark).max(seq.min(last));
        Ok(*mark)
    }

    /// Takes a deleted user out of every group (see `ChatStore::delete_user`).
    pub(super) fn leave_groups_on_delete(&mut self, user: &str) {
        let ids = self.groups.of_user.remove(user).unwrap_or_default();
        for id in ids {
            let Some(current) = self.groups.records.get(&id).cloned() else {
                continue;
            };
            self.groups
                .read_marks
                .remove(&(id.clone(), user.to_owned()));
            match without_member(&current, user) {
                Some(changed) => {
                    self.groups.records.insert(id, Arc::new(changed));
                }
                None => self.remove_group(&id),
            }
        }
    }

    /// A group's messages in `seq` order (its conversation is keyed by its id).
    fn group_messages(&self, group: &str) -> &[MessageRecord] {
        self.conversations
            .get(group)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}
