// Shared by the targets: fuzz input → the frames of one message. Each frame
// is a length byte then that many bytes, so the fuzzer controls frame counts
// and boundaries as well as contents.
pub fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = (len as usize).min(rest.len());
        frames.push(&rest[..len]);
        data = &rest[len..];
        if frames.len() == 6 {
            break;
        }
    }
    frames
}
