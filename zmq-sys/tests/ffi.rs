//! The declarations against the libzmq that build.rs built: its version,
//! CURVE in it, the layout of the types the zmq crate hands to it, and error
//! numbers and Z85 round trips through the real library.

use std::ffi::{CStr, CString};
use std::mem::{align_of, size_of};
use std::ptr;

use libc::{c_char, c_int, c_void};
use zmq_sys::*;

fn has(capability: &str) -> bool {
    let name = CString::new(capability).unwrap();
    unsafe { zmq_has(name.as_ptr()) == 1 }
}

#[test]
fn libzmq_is_4_3_4() {
    let (mut major, mut minor, mut patch) = (0, 0, 0);
    unsafe { zmq_version(&mut major, &mut minor, &mut patch) };
    assert_eq!((major, minor, patch), (4, 3, 4));
}

#[test]
fn libzmq_has_curve() {
    assert!(has("curve"), "libzmq was built without CURVE (libsodium)");
    assert!(has("ipc"));
    assert!(!has("no such capability"));
}

#[test]
fn types_have_the_c_layout() {
    assert_eq!(size_of::<zmq_msg_t>(), 64);
    assert_eq!(align_of::<zmq_msg_t>(), size_of::<*mut c_void>());
    // void *socket; int fd; short events; short revents;
    assert_eq!(size_of::<zmq_pollitem_t>(), size_of::<*mut c_void>() + size_of::<c_int>() + 4);
    assert_eq!(align_of::<zmq_pollitem_t>(), align_of::<*mut c_void>());
}

#[test]
fn a_message_round_trips_through_libzmq() {
    let mut msg = zmq_msg_t::default();
    unsafe {
        assert_eq!(zmq_msg_init_size(&mut msg, 5), 0);
        ptr::copy_nonoverlapping(b"hello".as_ptr(), zmq_msg_data(&mut msg) as *mut u8, 5);
        assert_eq!(zmq_msg_size(&msg), 5);
        assert_eq!(zmq_msg_more(&msg), 0);
        let data = std::slice::from_raw_parts(zmq_msg_data(&mut msg) as *const u8, 5);
        assert_eq!(data, b"hello");
        assert_eq!(zmq_msg_close(&mut msg), 0);
    }
}

#[test]
fn libzmq_errors_carry_its_numbers() {
    unsafe {
        let ctx = zmq_ctx_new();
        assert!(!ctx.is_null());
        // A socket type that does not exist.
        assert!(zmq_socket(ctx, 999).is_null());
        assert_eq!(zmq_errno(), errno::EINVAL);
        assert_eq!(zmq_ctx_term(ctx), 0);
        // Once terminated, libzmq's own ETERM.
        let msg = CStr::from_ptr(zmq_strerror(errno::ETERM)).to_str().unwrap();
        assert!(msg.contains("terminated"), "{msg}");
        let msg = CStr::from_ptr(zmq_strerror(errno::EFSM)).to_str().unwrap();
        assert!(msg.contains("state"), "{msg}");
    }
}

#[test]
fn a_curve_keypair_decodes_from_z85() {
    let mut public = [0 as c_char; 41];
    let mut secret = [0 as c_char; 41];
    unsafe {
        assert_eq!(zmq_curve_keypair(public.as_mut_ptr(), secret.as_mut_ptr()), 0, "errno {}", zmq_errno());
        let mut key = [0u8; 32];
        assert!(!zmq_z85_decode(key.as_mut_ptr(), public.as_ptr()).is_null());
        let mut text = [0 as c_char; 41];
        assert!(!zmq_z85_encode(text.as_mut_ptr(), key.as_ptr(), 32).is_null());
        assert_eq!(CStr::from_ptr(text.as_ptr()), CStr::from_ptr(public.as_ptr()));
    }
}
