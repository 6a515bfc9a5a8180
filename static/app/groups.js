// Group dialogs: "New group" (a name, a description, the people to add; or find a group to
// join) and "Group settings" (rename, describe, add and remove members, hand over the admin
// role, leave). Every name shown is text, never markup; the server decides who may do what, and
// its refusals are shown as they come.

import { ApiError } from './api.js';
import { avatar } from './avatar.js';
import { h, icon, toast } from './dom.js';
import { displayName } from './format.js';
import {
  addMember, createGroup, joinGroup, leaveGroup, removeMember, searchGroups, sortedUsers, state,
  transferAdmin, updateGroup,
} from './state.js';

const MAX_NAME = 100;
const MAX_DESCRIPTION = 500;

function fold(text) {
  return String(text || '').normalize('NFD').replace(/[\u0300-\u036f]/g, '').toLowerCase();
}

function problem(error, fallback) {
  return error instanceof ApiError ? error.message : fallback;
}

/** A modal dialog that removes itself when closed. */
function modal(title, testid, ...body) {
  const close = h('button', { class: 'icon-btn small', type: 'button', 'aria-label': 'Close', onclick: () => dialog.close() }, icon('x'));
  const dialog = h('dialog', { class: 'sheet', 'aria-label': title, 'data-testid': testid },
    h('header', { class: 'sheet-head' }, h('h2', { class: 'sheet-title', text: title }), close),
    h('div', { class: 'sheet-body' }, ...body));
  dialog.addEventListener('close', () => dialog.remove());
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close();
  });
  document.body.appendChild(dialog);
  dialog.showModal();
  return dialog;
}

function textField(label, { value = '', max, testid, multiline = false, placeholder = '' }) {
  const input = h(multiline ? 'textarea' : 'input', {
    class: 'sheet-input',
    maxlength: String(max),
    placeholder,
    'data-testid': testid,
    rows: multiline ? '2' : null,
  });
  input.value = value;
  return { input, element: h('label', { class: 'sheet-field' }, h('span', { class: 'sheet-label', text: label }), input) };
}

/** A filterable list of people with a checkbox each; `chosen` is a Set of ids it fills. */
function peoplePicker(people, chosen, testid) {
  const filter = h('input', { type: 'search', class: 'sheet-input', placeholder: 'Search people', 'aria-label': 'Search people', 'data-testid': `${testid}-search` });
  const list = h('ul', { class: 'picker', 'data-testid': testid });
  const render = () => {
    const query = fold(filter.value.trim());
    const shown = people.filter((person) => !query || fold(person.fullName).includes(query));
    list.replaceChildren(...shown.map((person) => {
      const box = h('input', { type: 'checkbox', checked: chosen.has(person._id), 'data-user-id': person._id });
      box.addEventListener('change', () => {
        if (box.checked) chosen.add(person._id);
        else chosen.delete(person._id);
      });
      return h('li', {}, h('label', { class: 'picker-row' }, box, avatar(person, { size: 'sm' }), h('span', { text: displayName(person) })));
    }));
    if (shown.length === 0) list.replaceChildren(h('li', { class: 'muted small picker-empty', text: people.length ? 'No one matches.' : 'No one else is here yet.' }));
  };
  filter.addEventListener('input', render);
  render();
  return h('div', { class: 'picker-wrap' }, filter, list);
}

export function openCreateGroup({ navigate }) {
  const name = textField('Name', { max: MAX_NAME, testid: 'group-name', placeholder: 'Weekend hikers' });
  const description = textField('Description (optional)', { max: MAX_DESCRIPTION, testid: 'group-description', multiline: true });
  const chosen = new Set();
  const picker = peoplePicker(sortedUsers(), chosen, 'group-members');
  const error = h('p', { class: 'field-error', 'data-testid': 'group-error' });
  const create = h('button', { class: 'btn btn-primary', type: 'submit', 'data-testid': 'create-group' }, 'Create group');
  const form = h('form', { class: 'sheet-form' }, name.element, description.element,
    h('span', { class: 'sheet-label', text: 'Members' }), picker, error, create);

  // Or join a group someone else made.
  const findInput = h('input', { type: 'search', class: 'sheet-input', placeholder: 'Find a group to join', 'aria-label': 'Find a group to join', 'data-testid': 'find-group' });
  const found = h('ul', { class: 'picker', 'data-testid': 'found-groups' });
  let searchTimer = null;
  findInput.addEventListener('input', () => {
    clearTimeout(searchTimer);
    const query = findInput.value.trim();
    if (!query) {
      found.replaceChildren();
      return;
    }
    searchTimer = setTimeout(async () => {
      try {
        const groups = await searchGroups(query);
        if (findInput.value.trim() !== query) return;
        const list = Array.isArray(groups) ? groups : groups?.groups || [];
        found.replaceChildren(...list.map((group) => h('li', { class: 'picker-row' },
          avatar({ _id: group._id, fullName: group.name, profilePic: group.profilePic }, { size: 'sm' }),
          h('span', { class: 'picker-name', text: group.name }),
          h('button', {
            class: 'btn btn-secondary btn-small',
            type: 'button',
            'data-testid': 'join-group',
            onclick: async () => {
              try {
                await joinGroup(group._id);
                dialog.close();
                navigate(`/groups/${group._id}`);
              } catch (joinError) {
                toast(problem(joinError, 'Could not join that group.'), 'error');
              }
            },
          }, 'Join'))));
        if (list.length === 0) found.replaceChildren(h('li', { class: 'muted small picker-empty', text: 'No group to join by that name.' }));
      } catch (searchError) {
        found.replaceChildren(h('li', { class: 'muted small picker-empty', text: problem(searchError, 'Search failed.') }));
      }
    }, 250);
  });

  const dialog = modal('New group', 'create-group-dialog', form,
    h('div', { class: 'sheet-divider' }, h('span', { text: 'or' })), findInput, found);
  name.input.focus();
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const groupName = name.input.value.trim();
    if (!groupName) {
      error.textContent = 'Give the group a name.';
      name.input.focus();
      return;
    }
    create.disabled = true;
    error.textContent = '';
    try {
      const group = await createGroup({ name: groupName, description: description.input.value.trim(), members: [...chosen] });
      dialog.close();
      if (group?._id) navigate(`/groups/${group._id}`);
    } catch (createError) {
      error.textContent = problem(createError, 'The group could not be created.');
    } finally {
      create.disabled = false;
    }
  });
}

/** The settings of `group` (its latest copy is read from the state on every render). */
export function openGroupSettings(groupId, { navigate }) {
  const current = () => state.groups.get(groupId);
  const group = current();
  if (!group) return;
  const body = h('div', { class: 'sheet-form' });
  const dialog = modal('Group settings', 'group-settings', body);

  const isAdmin = () => adminId(current()) === state.me._id;

  function render() {
    const now = current();
    if (!now) {
      dialog.close();
      return;
    }
    const admin = isAdmin();
    const parts = [];
    if (admin) {
      const name = textField('Name', { value: now.name, max: MAX_NAME, testid: 'settings-name' });
      const description = textField('Description', { value: now.description || '', max: MAX_DESCRIPTION, testid: 'settings-description', multiline: true });
      const save = h('button', {
        class: 'btn btn-primary btn-small',
        type: 'button',
        'data-testid': 'save-group',
        onclick: () => run(() => updateGroup(groupId, { name: name.input.value.trim(), description: description.input.value.trim() }), 'Saved'),
      }, 'Save');
      parts.push(name.element, description.element, save);
    } else {
      parts.push(h('p', { class: 'sheet-about', text: now.description || 'No description.' }));
    }
    const members = (now.members || []).filter((member) => member && typeof member._id === 'string');
    parts.push(h('span', { class: 'sheet-label', text: `${members.length} members` }));
    parts.push(h('ul', { class: 'picker members', 'data-testid': 'group-member-list' }, ...members.map((member) => {
      const isMe = member._id === state.me._id;
      const role = member._id === adminId(now) ? h('span', { class: 'role-tag', text: 'Admin' }) : null;
      const actions = admin && !isMe ? [
        member._id === adminId(now) ? null : h('button', {
          class: 'btn btn-ghost btn-small',
          type: 'button',
          'data-testid': 'make-admin',
          onclick: () => run(() => transferAdmin(groupId, member._id), `${displayName(member)} is now the admin`),
        }, 'Make admin'),
        h('button', {
          class: 'btn btn-danger-ghost btn-small',
          type: 'button',
          'data-testid': 'remove-member',
          'aria-label': `Remove ${displayName(member)}`,
          onclick: () => run(() => removeMember(groupId, member._id), `${displayName(member)} was removed`),
        }, 'Remove'),
      ] : [];
      return h('li', { class: 'picker-row', 'data-user-id': member._id },
        avatar(member, { size: 'sm' }), h('span', { class: 'picker-name', text: isMe ? `${displayName(member)} (you)` : displayName(member) }), role, ...actions);
    })));
    if (admin) {
      const inGroup = new Set(members.map((member) => member._id));
      const candidates = sortedUsers().filter((user) => !inGroup.has(user._id));
      const chosen = new Set();
      parts.push(h('span', { class: 'sheet-label', text: 'Add people' }), peoplePicker(candidates, chosen, 'add-members'),
        h('button', {
          class: 'btn btn-secondary btn-small',
          type: 'button',
          'data-testid': 'add-members',
          onclick: () => run(async () => {
            for (const id of chosen) await addMember(groupId, id);
          }, chosen.size === 1 ? 'Added' : 'Added them'),
        }, 'Add'));
    }
    parts.push(h('button', {
      class: 'btn btn-danger-ghost leave-group',
      type: 'button',
      'data-testid': 'leave-group',
      onclick: () => run(async () => {
        await leaveGroup(groupId);
        dialog.close();
        navigate('/', { replace: true });
      }, `You left ${now.name}`),
    }, 'Leave group'));
    body.replaceChildren(...parts);
  }

  async function run(action, done) {
    for (const button of body.querySelectorAll('button')) button.disabled = true;
    try {
      await action();
      toast(done);
    } catch (error) {
      toast(problem(error, 'That did not work. Try again.'), 'error');
    }
    if (dialog.open) render();
  }

  render();
}

/** The admin's id, whether the server sent an id or a `{_id, fullName}` object. */
export function adminId(group) {
  const admin = group?.admin;
  return typeof admin === 'string' ? admin : admin?._id;
}
