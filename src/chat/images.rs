//! Images: recognised by their bytes, stored content-addressed on disk or in Cloudinary.
//!
//! An image is accepted only when its bytes are really PNG, JPEG, GIF or WebP, whatever name or
//! declared type it came with. Local images live in `DATA_DIR/uploads/<sha256>` and are served at
//! `/uploads/<sha256>`; the hash makes the URL unguessable and the file immutable.
//!
//! Before an image is stored, its structure is walked without decoding it ([`clean`]): its
//! canvas must be within the pixel limit (a 5 MB file can declare 30000×30000 pixels, gigabytes
//! in every viewer's browser), and its metadata (EXIF with the GPS position, XMP, IPTC, comments,
//! text) is cut out at the byte level, so pixels, colour and animation stay exactly as sent.
//! The stored file, its hash and its URL are those of the stripped bytes.

mod clean;
mod exif;
mod gif;
mod jpeg;
mod png;
#[cfg(test)]
mod test_images;
mod webp;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::error::ChatError;

/// Largest image accepted, in bytes.
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;

/// Default largest canvas, in pixels: 40 megapixels, above the photos phones take by default,
/// and 160 MB once a browser has decoded it.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 40_000_000;

/// What every stored image must meet beyond its byte size.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    max_pixels: u64,
}

impl ImageLimits {
    /// Refuses 0: a limit nothing meets is a mistake, and "0 means off" would make one typo
    /// switch the protection off.
    pub fn new(max_pixels: u64) -> Result<ImageLimits, ChatError> {
        if max_pixels == 0 {
            return Err(ChatError::Invalid(
                "the image pixel limit must be at least 1".to_owned(),
            ));
        }
        Ok(ImageLimits { max_pixels })
    }
}

/// Checks an image (bytes, real type, structure, pixel limit) and returns it without metadata.
pub fn sanitise(bytes: &[u8], limits: ImageLimits) -> Result<Vec<u8>, ChatError> {
    let kind = check_image(bytes)?;
    let cleaned = clean::clean(kind, bytes).map_err(|clean::Damaged(why)| {
        ChatError::UnsupportedImage(format!("image cannot be read: {why}"))
    })?;
    if cleaned.pixels() > limits.max_pixels {
        return Err(ChatError::TooManyPixels {
            width: cleaned.width,
            height: cleaned.height,
            limit: limits.max_pixels,
        });
    }
    Ok(cleaned.bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Png,
    Jpeg,
    Gif,
    Webp,
}

impl ImageKind {
    /// Recognises an image by its magic bytes.
    pub fn sniff(bytes: &[u8]) -> Option<ImageKind> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageKind::Png)
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(ImageKind::Jpeg)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(ImageKind::Gif)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(ImageKind::Webp)
        } else {
            None
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Gif => "image/gif",
            ImageKind::Webp => "image/webp",
        }
    }
}

/// Checks raw image bytes: size and real type.
pub fn check_image(bytes: &[u8]) -> Result<ImageKind, ChatError> {
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(ChatError::TooLarge {
            what: "image",
            limit: MAX_IMAGE_BYTES,
        });
    }
    if bytes.is_empty() {
        return Err(ChatError::Invalid("image is empty".to_owned()));
    }
    ImageKind::sniff(bytes).ok_or_else(|| {
        ChatError::UnsupportedImage("image must be a PNG, JPEG, GIF or WebP file".to_owned())
    })
}

/// Decodes a `data:image/...;base64,...` URL into checked image bytes.
pub fn decode_data_url(url: &str) -> Result<(Vec<u8>, ImageKind), ChatError> {
    let invalid = || ChatError::Invalid("image must be a base64 data URL".to_owned());
    let rest = url.strip_prefix("data:").ok_or_else(invalid)?;
    let (header, payload) = rest.split_once(',').ok_or_else(invalid)?;
    if !header.ends_with(";base64") {
        return Err(invalid());
    }
    // Base64 is 4/3 of the bytes: refuse oversized payloads before decoding them.
    if payload.len() / 4 * 3 > MAX_IMAGE_BYTES + 3 {
        return Err(ChatError::TooLarge {
            what: "image",
            limit: MAX_IMAGE_BYTES,
        });
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|_| invalid())?;
    let kind = check_image(&bytes)?;
    Ok((bytes, kind))
}

/// The content address of an image.
pub fn image_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `name` is a content address made by [`image_hash`].
pub fn is_image_hash(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The local upload directory.
#[derive(Debug, Clone)]
pub struct Uploads {
    dir: PathBuf,
    limits: ImageLimits,
}

impl Uploads {
    pub fn new(data_dir: &Path, limits: ImageLimits) -> Uploads {
        Uploads {
            dir: data_dir.join("uploads"),
            limits,
        }
    }

    pub fn path_of(&self, hash: &str) -> PathBuf {
        self.dir.join(hash)
    }

    /// Checks an image against the limits, strips its metadata ([`sanitise`]) and stores the
    /// result under its hash, durably (written to a temporary file, synced, renamed). Storing
    /// the same image twice is a no-op. This is the only way into the directory, so every
    /// stored image has passed the checks, whichever route it came by.
    pub async fn put(&self, bytes: Vec<u8>) -> Result<String, ChatError> {
        let dir = self.dir.clone();
        let limits = self.limits;
        // Walking a 5 MB image takes a few milliseconds: off the async threads, with the write.
        tokio::task::spawn_blocking(move || -> Result<String, ChatError> {
            let bytes = sanitise(&bytes, limits)?;
            let hash = image_hash(&bytes);
            store(&dir, &hash, &bytes)
                .map_err(|err| ChatError::Internal(format!("cannot store image: {err}")))?;
            Ok(hash)
        })
        .await
        .map_err(|err| ChatError::Internal(format!("image store task failed: {err}")))?
    }

    pub async fn read(&self, hash: &str) -> Result<Option<Vec<u8>>, ChatError> {
        if !is_image_hash(hash) {
            return Ok(None);
        }
        match tokio::fs::read(self.path_of(hash)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(ChatError::Internal(format!("cannot read image: {err}"))),
        }
    }
}

fn store(dir: &Path, hash: &str, bytes: &[u8]) -> std::io::Result<()> {
    let target = dir.join(hash);
    if target.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(".{hash}.{}", rand::random::<u64>()));
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, &target)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Where image URLs point: this server's `/uploads`, or Cloudinary.
#[derive(Clone)]
pub enum ImageHost {
    Local,
    Cloudinary(Cloudinary),
}

impl ImageHost {
    /// Publishes a stored image and returns its URL.
    pub async fn publish(&self, uploads: &Uploads, hash: &str) -> Result<String, ChatError> {
        match self {
            ImageHost::Local => Ok(format!("/uploads/{hash}")),
            ImageHost::Cloudinary(cloudinary) => {
                let bytes = uploads.read(hash).await?.ok_or_else(|| {
                    ChatError::Internal(format!("staged image {hash} is missing"))
                })?;
                cloudinary.upload(hash, bytes).await
            }
        }
    }
}

/// Cloudinary's signed upload API, configured by `cloudinary://<key>:<secret>@<cloud>`.
#[derive(Clone)]
pub struct Cloudinary {
    api_key: String,
    api_secret: String,
    cloud_name: String,
    endpoint: String,
    client: reqwest::Client,
}

impl Cloudinary {
    pub fn from_url(url: &str) -> Result<Cloudinary, String> {
        let rest = url
            .strip_prefix("cloudinary://")
            .ok_or("CLOUDINARY_URL must start with cloudinary://")?;
        let (credentials, cloud_name) = rest
            .split_once('@')
            .ok_or("CLOUDINARY_URL must be cloudinary://<key>:<secret>@<cloud>")?;
        let (api_key, api_secret) = credentials
            .split_once(':')
            .ok_or("CLOUDINARY_URL must be cloudinary://<key>:<secret>@<cloud>")?;
        Ok(Cloudinary {
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
            cloud_name: cloud_name.trim_end_matches('/').to_owned(),
            endpoint: "https://api.cloudinary.com".to_owned(),
            client: reqwest::Client::new(),
        })
    }

    /// Uploads with `public_id = hash` (so a retried upload overwrites, never duplicates).
    async fn upload(&self, hash: &str, bytes: Vec<u8>) -> Result<String, ChatError> {
        let timestamp = crate::time::now_secs().to_string();
        // Cloudinary signs the sorted parameters followed by the secret (SHA-256 variant).
        let to_sign = format!("public_id={hash}&timestamp={timestamp}{}", self.api_secret);
        let signature = hex::encode(Sha256::digest(to_sign.as_bytes()));
        let file = format!(
            "data:application/octet-stream;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        );
        let form = [
            ("file", file.as_str()),
            ("public_id", hash),
            ("timestamp", timestamp.as_str()),
            ("api_key", self.api_key.as_str()),
            ("signature", signature.as_str()),
            ("signature_algorithm", "sha256"),
        ];
        let url = format!("{}/v1_1/{}/image/upload", self.endpoint, self.cloud_name);
        let response = self
            .client
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|err| ChatError::Internal(format!("cloudinary upload failed: {err}")))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|err| ChatError::Internal(format!("cloudinary answered badly: {err}")))?;
        if !status.is_success() {
            return Err(ChatError::Internal(format!(
                "cloudinary refused the upload ({status}): {}",
                body["error"]["message"]
                    .as_str()
                    .unwrap_or("no reason given")
            )));
        }
        body["secure_url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ChatError::Internal("cloudinary gave no secure_url".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn images_are_recognised_by_their_bytes_not_their_name() {
        assert_eq!(ImageKind::sniff(PNG), Some(ImageKind::Png));
        assert_eq!(
            ImageKind::sniff(&[0xff, 0xd8, 0xff, 0xe0]),
            Some(ImageKind::Jpeg)
        );
        assert_eq!(ImageKind::sniff(b"GIF89a...."), Some(ImageKind::Gif));
        assert_eq!(
            ImageKind::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageKind::Webp)
        );
        assert_eq!(ImageKind::sniff(b"hello, I am a text file"), None);
        assert!(check_image(b"<script>alert(1)</script>").is_err());
    }

    #[test]
    fn data_urls_decode_and_are_checked() {
        let good = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(PNG)
        );
        assert_eq!(decode_data_url(&good).unwrap().1, ImageKind::Png);
        let fake = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(b"not an image")
        );
        assert!(matches!(
            decode_data_url(&fake),
            Err(ChatError::UnsupportedImage(_))
        ));
        assert!(decode_data_url("http://example.com/x.png").is_err());
        assert!(decode_data_url("data:image/png;base64,!!!").is_err());
        let huge = format!("data:image/png;base64,{}", "A".repeat(8 * 1024 * 1024));
        assert!(matches!(
            decode_data_url(&huge),
            Err(ChatError::TooLarge { .. })
        ));
    }

    #[test]
    fn sanitising_checks_the_pixel_limit_and_strips_metadata() {
        let limits = ImageLimits::new(100).unwrap();
        let square = test_images::png(10, 10, &[(b"tEXt", b"Author\0Secret")]);
        let clean = sanitise(&square, limits).unwrap();
        assert!(!test_images::contains(&clean, b"Secret"));
        assert!(matches!(
            sanitise(&test_images::png(11, 10, &[]), limits),
            Err(ChatError::TooManyPixels {
                width: 11,
                height: 10,
                limit: 100
            })
        ));
        // A sniffed type whose structure does not hold is a 400, not a 5xx.
        assert!(matches!(
            sanitise(PNG, limits),
            Err(ChatError::UnsupportedImage(_))
        ));
        assert!(ImageLimits::new(0).is_err());
    }

    #[test]
    fn cloudinary_urls_parse() {
        let cloudinary = Cloudinary::from_url("cloudinary://key:secret@demo").unwrap();
        assert_eq!(cloudinary.cloud_name, "demo");
        assert!(Cloudinary::from_url("https://x").is_err());
    }
}
