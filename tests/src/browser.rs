//! Debian's Chromium, headless, driven over the DevTools protocol (chromiumoxide): for the
//! dashboard's test and bench.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use chromiumoxide::{
    Page,
    browser::{Browser, BrowserConfig},
    page::ScreenshotParams,
};
use futures::StreamExt;

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A running headless Chromium with a profile of its own, and the task that drives its protocol;
/// the profile goes when dropped.
pub struct Chromium {
    pub browser: Browser,
    driver: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    pub async fn launch() -> Result<Self> {
        ensure!(
            std::path::Path::new(CHROMIUM).exists(),
            "no {CHROMIUM}: the test command installs Debian's chromium"
        );
        let profile = tempfile::tempdir()?;
        // This machine has no way out: Chromium's own background traffic is turned off.
        let config = BrowserConfig::builder()
            .chrome_executable(CHROMIUM)
            .no_sandbox()
            .user_data_dir(profile.path())
            .window_size(1280, 900)
            .args([
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .build()
            .map_err(anyhow::Error::msg)?;
        let (browser, mut handler) = Browser::launch(config).await?;
        let driver = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Ok(Self {
            browser,
            driver,
            _profile: profile,
        })
    }

    /// Closes the browser and waits for it to exit.
    pub async fn close(mut self) -> Result<()> {
        self.browser.close().await?;
        let _ = self.browser.wait().await;
        self.driver.abort();
        Ok(())
    }
}

/// Where screenshots go: `<target dir>/screenshots/`.
pub fn screenshot_dir() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Writes a full-page screenshot of `page` as `dashboard-<name>.png` there.
pub async fn screenshot(page: &Page, name: &str) -> Result<PathBuf> {
    let path = screenshot_dir()?.join(format!("dashboard-{name}.png"));
    page.save_screenshot(ScreenshotParams::builder().full_page(true).build(), &path)
        .await?;
    Ok(path)
}
