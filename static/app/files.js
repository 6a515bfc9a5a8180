// File attachments: uploading a picked file (`POST /api/files/upload`) and the card a message
// shows for one (icon, name, size, a download link). Names and types are shown as text only;
// the link points at Courier's own file route, which serves anything but images as a download.

import { ApiError, api } from './api.js';
import { h, icon, safeUrl } from './dom.js';

/** The server's default `FILE_MAX_MB`; a larger file is refused before it is sent. */
export const MAX_FILE_BYTES = 25 * 1024 * 1024;

/** A user-facing problem with a picked file. */
export class FileProblem extends Error {}

/** `bytes` as people read sizes: 900 B, 12 KB, 3.4 MB. */
export function fileSize(bytes) {
  const size = Number(bytes) || 0;
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${Math.round(size / 1024)} KB`;
  return `${(size / (1024 * 1024)).toFixed(1)} MB`;
}

/** Uploads `file`; resolves to `{url, filename, size, type, mimeType}`. */
export async function uploadFile(file) {
  if (file.size > MAX_FILE_BYTES) {
    throw new FileProblem(`That file is ${fileSize(file.size)}; the limit is ${fileSize(MAX_FILE_BYTES)}.`);
  }
  const form = new FormData();
  form.append('file', file, file.name);
  try {
    const answer = await api('POST', '/api/files/upload', form);
    if (!answer?.file?.url) throw new FileProblem('The upload did not return a file.');
    return answer.file;
  } catch (error) {
    if (error instanceof ApiError) throw new FileProblem(error.message);
    throw error;
  }
}

/** The card of a message's file, or null when it has none (or its URL is not safe). */
export function fileCard(message) {
  const url = safeUrl(message.fileUrl);
  if (!url) return null;
  const name = message.fileName || 'file';
  return h('div', { class: 'file-card', 'data-testid': 'message-file' },
    h('span', { class: 'file-icon', 'aria-hidden': 'true' }, icon('file')),
    h('span', { class: 'file-info' },
      h('span', { class: 'file-name', text: name, title: name }),
      h('span', { class: 'file-meta muted small', text: [fileSize(message.fileSize), message.mimeType].filter(Boolean).join(' · ') })),
    h('a', {
      class: 'icon-btn file-download',
      href: url,
      download: name,
      rel: 'noopener',
      'aria-label': `Download ${name}`,
      title: 'Download',
      'data-testid': 'file-download',
    }, icon('download')));
}
