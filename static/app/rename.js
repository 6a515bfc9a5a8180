// The profile page's name editor: shows the name, and on "Edit" a small form that saves it.

import { ApiError, put } from './api.js';
import { h, toast } from './dom.js';

/** A `dd` showing `me.fullName` with an inline editor; calls `onUpdated(user)` once saved. */
export function nameEditor(me, onUpdated) {
  const cell = h('dd', { 'data-testid': 'profile-name' });
  const show = (name) => {
    const edit = h('button', {
      class: 'btn btn-ghost btn-small',
      type: 'button',
      'data-testid': 'edit-name',
      onclick: () => editing(name),
    }, h('span', { text: 'Edit' }));
    cell.replaceChildren(h('span', { class: 'name-value', text: name }), ' ', edit);
  };
  const editing = (name) => {
    const input = h('input', {
      type: 'text',
      value: name,
      maxlength: '100',
      autocomplete: 'name',
      'aria-label': 'Full name',
      'data-testid': 'name-input',
    });
    const save = h('button', { class: 'btn btn-secondary btn-small', type: 'submit', 'data-testid': 'save-name' }, h('span', { text: 'Save' }));
    const cancel = h('button', { class: 'btn btn-ghost btn-small', type: 'button', onclick: () => show(name) }, h('span', { text: 'Cancel' }));
    const form = h('form', {
      class: 'name-form',
      onsubmit: async (event) => {
        event.preventDefault();
        save.disabled = true;
        try {
          const updated = await put('/api/auth/update-profile', { fullName: input.value });
          onUpdated(updated);
          toast('Name updated');
          show(updated.fullName);
        } catch (error) {
          toast(error instanceof ApiError ? error.message : 'The name could not be saved.', 'error');
          save.disabled = false;
        }
      },
    }, input, save, cancel);
    cell.replaceChildren(form);
    input.focus();
  };
  show(me.fullName);
  return cell;
}
