//! Files of any type, as the paperclip sends them: stored content-addressed beside the images,
//! in `<uploads>/files/<sha256>`, and recognised by their bytes.
//!
//! A file arrives as a stream and is written to a temporary file in the same directory while
//! its SHA-256 is computed; only a complete file within the size limit is synced and renamed to
//! its hash, so a stored file is never partial and an upload cut short leaves nothing behind.
//! The same bytes uploaded twice are one file.
//!
//! What a file *is* comes from its first bytes ([`sniff`]), never from its name or declared
//! type alone: that decides whether it may ever be shown inline (raster images only, see
//! [`is_inline_image`]). Raster images small enough for the image route go through the same
//! check as sent images ([`super::images::sanitise`]): pixel limit, and the GPS position and
//! other metadata cut out before anything is stored.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::error::ChatError;
use super::images::{self, ImageKind, ImageLimits, MAX_IMAGE_BYTES};

/// Default largest file, in MiB (`FILE_MAX_MB`).
pub const DEFAULT_FILE_MAX_MB: u64 = 25;

/// Bytes of a file's start kept for recognising its type.
const HEAD_BYTES: usize = 512;

/// Longest file name kept, in characters (the extension is kept when a name is cut).
pub const MAX_FILE_NAME: usize = 120;

/// How the temporary file of an upload in progress is named (never a hash).
const TEMPORARY_PREFIX: &str = ".upload-";

/// The prefix of every file URL: `/api/files/<sha256>/<name>`.
pub const URL_PREFIX: &str = "/api/files/";

/// A coarse kind, as the MERN front end shows it (`type` in the upload answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Image,
    Video,
    Audio,
    Document,
    Archive,
    Other,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Image => "image",
            FileKind::Video => "video",
            FileKind::Audio => "audio",
            FileKind::Document => "document",
            FileKind::Archive => "archive",
            FileKind::Other => "other",
        }
    }
}

/// What a file was recognised as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    pub kind: FileKind,
    /// The recognised type, or the declared one when the bytes say nothing (well formed, and
    /// never trusted for serving), or `application/octet-stream`.
    pub mime_type: String,
}

/// Recognises a file by its first bytes; `declared` (the upload's own content type) and `name`
/// only refine what the bytes allow (a ZIP named `.docx` is a document) or fill in when the
/// bytes match nothing known.
pub fn sniff(head: &[u8], declared: Option<&str>, name: &str) -> Sniffed {
    let found = |kind, mime: &str| Sniffed {
        kind,
        mime_type: mime.to_owned(),
    };
    if let Some(image) = ImageKind::sniff(head) {
        return found(FileKind::Image, image.content_type());
    }
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let extension = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    let declared = declared.and_then(clean_mime);
    if at(0, b"%PDF-") {
        return found(FileKind::Document, "application/pdf");
    }
    if at(0, b"PK\x03\x04") || at(0, b"PK\x05\x06") {
        // Office documents and e-books are ZIP files too; their name or declared type tells.
        let office = [
            "docx", "xlsx", "pptx", "odt", "ods", "odp", "epub", "pages", "key", "numbers",
        ];
        if office.contains(&extension.as_str()) {
            let mime = declared
                .filter(|mime| mime != "application/zip")
                .unwrap_or_else(|| "application/zip".to_owned());
            return found(FileKind::Document, &mime);
        }
        return found(FileKind::Archive, "application/zip");
    }
    if at(0, &[0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]) {
        // The old Office format (doc, xls, ppt).
        return found(FileKind::Document, "application/x-ole-storage");
    }
    if at(0, &[0x1f, 0x8b]) {
        return found(FileKind::Archive, "application/gzip");
    }
    if at(0, b"7z\xbc\xaf\x27\x1c") {
        return found(FileKind::Archive, "application/x-7z-compressed");
    }
    if at(0, b"Rar!\x1a\x07") {
        return found(FileKind::Archive, "application/vnd.rar");
    }
    if at(0, &[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return found(FileKind::Archive, "application/x-xz");
    }
    if at(257, b"ustar") {
        return found(FileKind::Archive, "application/x-tar");
    }
    if at(0, b"RIFF") && at(8, b"WAVE") {
        return found(FileKind::Audio, "audio/wav");
    }
    if at(0, b"RIFF") && at(8, b"AVI ") {
        return found(FileKind::Video, "video/x-msvideo");
    }
    if at(0, b"ID3") || at(0, &[0xff, 0xfb]) || at(0, &[0xff, 0xf3]) || at(0, &[0xff, 0xf2]) {
        return found(FileKind::Audio, "audio/mpeg");
    }
    if at(0, b"fLaC") {
        return found(FileKind::Audio, "audio/flac");
    }
    if at(0, b"OggS") {
        return found(FileKind::Audio, "audio/ogg");
    }
    if at(4, b"ftyp") {
        let audio = at(8, b"M4A ") || at(8, b"M4B ");
        return if audio {
            found(FileKind::Audio, "audio/mp4")
        } else if at(8, b"qt  ") {
            found(FileKind::Video, "video/quicktime")
        } else {
            found(FileKind::Video, "video/mp4")
        };
    }
    if at(0, &[0x1a, 0x45, 0xdf, 0xa3]) {
        return found(FileKind::Video, "video/webm");
    }
    // Nothing known: the declared type describes it, but only as a label.
    let text_like = std::str::from_utf8(head).is_ok()
        || std::str::from_utf8(&head[..head.len().saturating_sub(3)]).is_ok();
    let kind = match declared.as_deref() {
        Some(mime) if mime.starts_with("video/") => FileKind::Video,
        Some(mime) if mime.starts_with("audio/") => FileKind::Audio,
        Some(mime)
            if mime.starts_with("text/")
                || mime == "application/rtf"
                || mime == "application/json"
                || mime.starts_with("application/vnd.") =>
        {
            FileKind::Document
        }
        _ if text_like && ["txt", "md", "csv", "log", "rtf"].contains(&extension.as_str()) => {
            FileKind::Document
        }
        _ => FileKind::Other,
    };
    let mime_type = declared.unwrap_or_else(|| {
        if kind == FileKind::Document && text_like {
            "text/plain".to_owned()
        } else {
            "application/octet-stream".to_owned()
        }
    });
    Sniffed { kind, mime_type }
}

/// A declared content type, lowercased, without parameters, if it looks like one.
fn clean_mime(declared: &str) -> Option<String> {
    let essence = declared.split(';').next()?.trim().to_ascii_lowercase();
    let (kind, subtype) = essence.split_once('/')?;
    let token = |part: &str| {
        !part.is_empty()
            && part.len() <= 64
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    (token(kind) && token(subtype)).then_some(essence)
}

/// Whether a stored file may be shown inline: a PNG, JPEG, GIF or WebP (by its bytes) no larger
/// than the image limit, which is what passed [`images::sanitise`] at upload. Everything else,
/// SVG included, is only ever downloaded.
pub fn is_inline_image(head: &[u8], size: u64) -> Option<ImageKind> {
    ImageKind::sniff(head).filter(|_| size <= MAX_IMAGE_BYTES as u64)
}

/// A file name as it is kept and shown: the last path component, without control, direction
/// or invisible characters, characters that mean something to a shell or a file system
/// replaced by `_`, at most [`MAX_FILE_NAME`] characters (keeping the extension); `file` when
/// nothing is left.
pub fn clean_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = super::names::clean(last)
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || " .-_()+,@[]~".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches(|c: char| c == '.' || c == ' ');
    let cleaned = if cleaned.chars().count() > MAX_FILE_NAME {
        let (stem, extension) = match cleaned.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() && ext.chars().count() <= 10 => (stem, ext),
            _ => (cleaned, ""),
        };
        let keep = MAX_FILE_NAME - extension.chars().count() - usize::from(!extension.is_empty());
        let stem: String = stem.chars().take(keep).collect();
        if extension.is_empty() {
            stem
        } else {
            format!("{stem}.{extension}")
        }
    } else {
        cleaned.to_owned()
    };
    if cleaned.is_empty() {
        "file".to_owned()
    } else {
        cleaned
    }
}

/// What a file name keeps unencoded in its URL: letters, digits and `-._~` (a cleaned name is
/// never `.` or `..`).
const NAME_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The URL of a stored file: `/api/files/<sha256>/<name>`, the name percent-encoded.
pub fn file_url(hash: &str, name: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(name, NAME_SET).to_string();
    format!("{URL_PREFIX}{hash}/{encoded}")
}

/// The content address and name of a URL made by [`file_url`], if `url` is exactly one
/// (the name decoded and cleaned again). For sends that carry a `fileUrl`.
pub fn parse_file_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix(URL_PREFIX)?;
    let (hash, name) = rest.split_once('/')?;
    if !images::is_image_hash(hash) || name.is_empty() || name.contains('/') {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .ok()?;
    let cleaned = clean_file_name(&decoded);
    (cleaned == decoded).then(|| (hash.to_owned(), cleaned))
}

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub hash: String,
    pub size: u64,
    /// The first bytes, for [`sniff`].
    pub head: Vec<u8>,
}

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the file is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Refused(ChatError),
    #[error("cannot store the file: {0}")]
    Io(#[from] std::io::Error),
}

/// The files directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    max_bytes: u64,
    limits: ImageLimits,
}

impl FileStore {
    /// Files under `<data_dir>/uploads/files`, at most `max_bytes` each.
    pub fn new(data_dir: &Path, max_bytes: u64, limits: ImageLimits) -> FileStore {
        FileStore {
            dir: data_dir.join("uploads").join("files"),
            max_bytes,
            limits,
        }
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file `hash` is, if `hash` is a content address (never any other path).
    pub fn path_of(&self, hash: &str) -> Option<PathBuf> {
        images::is_image_hash(hash).then(|| self.dir.join(hash))
    }

    /// The file `hash` as stored: its size and first bytes; `None` if there is none.
    pub async fn stat(&self, hash: &str) -> Result<Option<StoredFile>, std::io::Error> {
        let Some(path) = self.path_of(hash) else {
            return Ok(None);
        };
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let size = file.metadata().await?.len();
        let mut head = vec![0; HEAD_BYTES.min(size as usize)];
        tokio::io::AsyncReadExt::read_exact(&mut file, &mut head).await?;
        Ok(Some(StoredFile {
            hash: hash.to_owned(),
            size,
            head,
        }))
    }

    /// Removes the temporary files of uploads a crash cut short; returns how many. Call at
    /// start-up only, before any upload of this process begins (the data directory is this
    /// process's alone).
    pub fn remove_leftovers(&self) -> std::io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(err),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(TEMPORARY_PREFIX)
            {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Starts an upload: a temporary file in the files directory.
    pub async fn begin(&self) -> Result<Staged, UploadError> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let temporary = self
            .dir
            .join(format!("{TEMPORARY_PREFIX}{:016x}", rand::random::<u64>()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
            .await?;
        Ok(Staged {
            store: self.clone(),
            file: Some(tokio::io::BufWriter::with_capacity(256 * 1024, file)),
            temporary,
            hasher: Sha256::new(),
            size: 0,
            head: Vec::with_capacity(HEAD_BYTES),
            image: Some(Vec::new()),
        })
    }
}

/// An upload being written; dropped without [`Staged::commit`], its temporary file is removed.
pub struct Staged {
    store: FileStore,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    temporary: PathBuf,
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
    /// The whole file while it may still be an image small enough to be cleaned.
    image: Option<Vec<u8>>,
}

impl Staged {
    /// Appends a chunk; fails once the file passes the size limit.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        self.size += chunk.len() as u64;
        if self.size > self.store.max_bytes {
            return Err(UploadError::TooLarge {
                limit: self.store.max_bytes,
            });
        }
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        if let Some(image) = &mut self.image {
            let may_be_image = self.head.len() < 12 || ImageKind::sniff(&self.head).is_some();
            if may_be_image && image.len() + chunk.len() <= MAX_IMAGE_BYTES {
                image.extend_from_slice(chunk);
            } else {
                self.image = None;
            }
        }
        self.hasher.update(chunk);
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("upload already finished"))?;
        file.write_all(chunk).await?;
        Ok(())
    }

    /// Makes the upload a stored file, durably: synced, renamed to its hash, the directory
    /// synced. A raster image within the image limit is checked and stored without its
    /// metadata (its hash is that of the cleaned bytes).
    pub async fn commit(mut self) -> Result<StoredFile, UploadError> {
        if self.size == 0 {
            return Err(UploadError::Refused(ChatError::Invalid(
                "the file is empty".to_owned(),
            )));
        }
        let mut file = self
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("upload already finished"))?;
        let image = self
            .image
            .take()
            .filter(|bytes| ImageKind::sniff(bytes).is_some());
        if let Some(bytes) = image {
            drop(file);
            let limits = self.store.limits;
            let dir = self.store.dir.clone();
            let stored = tokio::task::spawn_blocking(move || -> Result<StoredFile, UploadError> {
                let cleaned = images::sanitise(&bytes, limits).map_err(UploadError::Refused)?;
                let hash = images::image_hash(&cleaned);
                store_bytes(&dir, &hash, &cleaned)?;
                Ok(StoredFile {
                    hash,
                    size: cleaned.len() as u64,
                    head: cleaned[..HEAD_BYTES.min(cleaned.len())].to_vec(),
                })
            })
            .await
            .map_err(|err| std::io::Error::other(format!("file store task failed: {err}")))??;
            return Ok(stored);
        }
        file.flush().await?;
        let file = file.into_inner();
        file.sync_all().await?;
        drop(file);
        let hash = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let target = self.store.dir.join(&hash);
        if tokio::fs::try_exists(&target).await? {
            // The same bytes are stored already; this copy goes when `self` is dropped.
        } else {
            tokio::fs::rename(&self.temporary, &target).await?;
            sync_dir(&self.store.dir).await?;
        }
        Ok(StoredFile {
            hash,
            size: self.size,
            head: std::mem::take(&mut self.head),
        })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a rename this finds nothing, which is fine.
        let _ = std::fs::remove_file(&self.temporary);
    }
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(std::io::Error::other)?
}

/// Writes `bytes` as the file `hash` (temporary file, sync, rename, directory sync) unless it
/// is there already.
fn store_bytes(dir: &Path, hash: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let target = dir.join(hash);
    if target.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!("{TEMPORARY_PREFIX}{:016x}", rand::random::<u64>()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_bytes() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(
            sniff(png, Some("text/html"), "a.html").kind,
            FileKind::Image
        );
        assert_eq!(sniff(png, None, "x").mime_type, "image/png");
        let pdf = sniff(b"%PDF-1.7\n", Some("application/octet-stream"), "r.pdf");
        assert_eq!(
            (pdf.kind, pdf.mime_type.as_str()),
            (FileKind::Document, "application/pdf")
        );
        assert_eq!(
            sniff(b"PK\x03\x04rest", None, "a.zip").kind,
            FileKind::Archive
        );
        let docx = sniff(
            b"PK\x03\x04rest",
            Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            "report.docx",
        );
        assert_eq!(docx.kind, FileKind::Document);
        assert!(docx.mime_type.contains("wordprocessingml"));
        assert_eq!(sniff(b"ID3\x04", None, "a.mp3").kind, FileKind::Audio);
        assert_eq!(
            sniff(b"\0\0\0\x20ftypisom", None, "v.mp4").kind,
            FileKind::Video
        );
        // Declared types only label what the bytes do not recognise.
        let svg = sniff(
            b"<svg xmlns='http://www.w3.org/2000/svg'>",
            Some("image/svg+xml"),
            "a.svg",
        );
        assert_eq!(
            (svg.kind, svg.mime_type.as_str()),
            (FileKind::Other, "image/svg+xml")
        );
        let notes = sniff(b"shopping list", Some("text/plain"), "notes.txt");
        assert_eq!(notes.kind, FileKind::Document);
        assert_eq!(
            sniff(b"\0\x01\x02", Some("bad type;;"), "blob").mime_type,
            "application/octet-stream"
        );
    }

    #[test]
    fn only_small_raster_images_are_inline() {
        let gif = b"GIF89a\x01\0\x01\0";
        assert_eq!(is_inline_image(gif, 100), Some(ImageKind::Gif));
        assert_eq!(is_inline_image(gif, MAX_IMAGE_BYTES as u64 + 1), None);
        assert_eq!(is_inline_image(b"<svg>", 5), None);
        assert_eq!(is_inline_image(b"<html>", 6), None);
    }

    #[test]
    fn names_are_cleaned_and_urls_round_trip() {
        assert_eq!(clean_file_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_file_name("C:\\Users\\me\\report.pdf"), "report.pdf");
        assert_eq!(clean_file_name("a\u{202E}fdp.exe"), "afdp.exe");
        assert_eq!(clean_file_name("x<script>.html"), "x_script_.html");
        assert_eq!(clean_file_name("..."), "file");
        assert_eq!(clean_file_name("Zoë's notes.txt"), "Zoë_s notes.txt");
        let long = format!("{}.pdf", "a".repeat(500));
        let cut = clean_file_name(&long);
        assert_eq!(cut.chars().count(), MAX_FILE_NAME);
        assert!(cut.ends_with(".pdf"));

        let hash = "ab".repeat(32);
        let url = file_url(&hash, "Zoë notes.txt");
        assert_eq!(url, format!("/api/files/{hash}/Zo%C3%AB%20notes.txt"));
        assert_eq!(
            parse_file_url(&url),
            Some((hash.clone(), "Zoë notes.txt".to_owned()))
        );
        assert_eq!(
            parse_file_url(&format!("/api/files/{hash}/..%2F..%2Fx")),
            None
        );
        assert_eq!(parse_file_url("/api/files/abc/x.txt"), None);
        assert_eq!(parse_file_url(&format!("/uploads/{hash}")), None);
    }
}
