// Preparing pictures in the browser before upload: checked, downscaled on a canvas, and turned
// into a data URL (what `POST /api/messages/send` and `PUT /api/auth/update-profile` take).

export const ACCEPTED_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];
/** The server's limit on the decoded image. */
export const MAX_BYTES = 5 * 1024 * 1024;

/** A user-facing problem with a picked file. */
export class ImageProblem extends Error {}

function readAsDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new ImageProblem('That file could not be read.'));
    reader.readAsDataURL(blob);
  });
}

function loadImage(blob) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(blob);
    const image = new Image();
    image.onload = () => {
      URL.revokeObjectURL(url);
      resolve(image);
    };
    image.onerror = () => {
      URL.revokeObjectURL(url);
      reject(new ImageProblem('That file is not an image this browser can open.'));
    };
    image.src = url;
  });
}

function canvasBlob(canvas, type, quality) {
  return new Promise((resolve) => canvas.toBlob(resolve, type, quality));
}

/**
 * Prepares `file` for sending: images larger than `maxSide` pixels (or heavier than `maxBytes`)
 * are redrawn smaller as JPEG (WebP when they may be transparent); GIFs are sent as they are,
 * so animations survive. With `square`, the centre square is cropped (for avatars).
 * Resolves to `{dataUrl, width, height, bytes}`.
 */
export async function prepareImage(file, { maxSide = 2048, maxBytes = 1.5 * 1024 * 1024, square = false } = {}) {
  if (!file || !ACCEPTED_TYPES.includes(file.type)) {
    throw new ImageProblem('Choose a PNG, JPEG, GIF or WebP image.');
  }
  if (file.type === 'image/gif' && !square) {
    if (file.size > MAX_BYTES) throw new ImageProblem('GIFs can be at most 5 MB.');
    const image = await loadImage(file);
    return { dataUrl: await readAsDataUrl(file), width: image.naturalWidth, height: image.naturalHeight, bytes: file.size };
  }
  const image = await loadImage(file);
  let sourceX = 0;
  let sourceY = 0;
  let sourceWidth = image.naturalWidth;
  let sourceHeight = image.naturalHeight;
  if (square) {
    const side = Math.min(sourceWidth, sourceHeight);
    sourceX = Math.floor((sourceWidth - side) / 2);
    sourceY = Math.floor((sourceHeight - side) / 2);
    sourceWidth = sourceHeight = side;
  }
  const scale = Math.min(1, maxSide / Math.max(sourceWidth, sourceHeight));
  const needsWork = square || scale < 1 || file.size > maxBytes;
  if (!needsWork) {
    return { dataUrl: await readAsDataUrl(file), width: sourceWidth, height: sourceHeight, bytes: file.size };
  }
  const width = Math.max(1, Math.round(sourceWidth * scale));
  const height = Math.max(1, Math.round(sourceHeight * scale));
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d');
  context.imageSmoothingQuality = 'high';
  context.drawImage(image, sourceX, sourceY, sourceWidth, sourceHeight, 0, 0, width, height);
  const mayBeTransparent = file.type === 'image/png' || file.type === 'image/webp';
  let blob = await canvasBlob(canvas, mayBeTransparent ? 'image/webp' : 'image/jpeg', 0.86);
  if (!blob || !ACCEPTED_TYPES.includes(blob.type)) {
    // The browser cannot encode WebP: JPEG on white keeps it light.
    context.globalCompositeOperation = 'destination-over';
    context.fillStyle = '#fff';
    context.fillRect(0, 0, width, height);
    blob = await canvasBlob(canvas, 'image/jpeg', 0.86);
  }
  if (!blob) throw new ImageProblem('That image could not be prepared.');
  if (blob.size > MAX_BYTES) throw new ImageProblem('That image is too large, even after shrinking it.');
  return { dataUrl: await readAsDataUrl(blob), width, height, bytes: blob.size };
}
