//! QEMU guest harness: initramfs, boot under TCG, serial console sentinels.
