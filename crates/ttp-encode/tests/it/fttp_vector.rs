//! The fTTP record filter against the Mainzelliste library's own test vector, and against
//! outputs of the library's algorithm run on OpenJDK 17 (seeds and values are synthetic).

use base64::Engine as _;
use ttp_encode::fttp::{DEFAULT_VOCABULARY, FttpEncoder, FttpParams};

const VECTOR: &str = include_str!("../vectors/mainzelliste-fttp-vector-1.json");

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn mainzelliste_vector_1_bit_for_bit() {
    let vector: serde_json::Value = serde_json::from_str(VECTOR).unwrap();
    // The vector's `config` object is accepted as-is.
    let params: FttpParams = serde_json::from_value(vector["config"].clone()).unwrap();
    let encoder = FttpEncoder::new(&params).unwrap();

    let input = &vector["input_normalised"];
    let values: Vec<&str> = encoder
        .fields()
        .iter()
        .map(|f| input[f.as_str()].as_str().unwrap())
        .collect();
    let out = encoder.encode(&values);

    let expected_bits = vector["expected_bits"].as_u64().unwrap() as usize;
    let expected_ones = vector["expected_ones"].as_u64().unwrap() as u32;
    assert_eq!(out.len() * 8, expected_bits);
    assert_eq!(
        out.iter().map(|b| b.count_ones()).sum::<u32>(),
        expected_ones
    );
    assert_eq!(b64(&out), vector["expected_base64"].as_str().unwrap());
    assert_eq!(encoder.encode_base64(&values), b64(&out));
}

/// The default vocabulary, L = 900, extreme and negative seeds.
fn default_vocabulary_encoder(balanced_seed: i64) -> FttpEncoder {
    let fields = ["firstName", "lastName", "birthDate", "gender"];
    let seeds = [1, -2, 3_000_000_000, i64::MIN];
    let params = FttpParams {
        length: 900,
        n_gram_length: 2,
        random_position_number: 30,
        vocabulary: DEFAULT_VOCABULARY.to_owned(),
        balanced_seed,
        field_seeds: fields
            .iter()
            .zip(seeds)
            .map(|(f, s)| (f.to_string(), s))
            .collect(),
        field_order: fields.iter().map(|f| f.to_string()).collect(),
    };
    FttpEncoder::new(&params).unwrap()
}

#[test]
fn default_vocabulary_matches_the_java_library() {
    let encoder = default_vocabulary_encoder(-42);
    // Lower-case letters, `Ü`, `'` and `f` are outside the default vocabulary: their bigrams
    // are skipped. Empty values contribute the "  " bigram.
    let cases: [([&str; 4], &str); 3] = [
        (
            ["ANNA-LENA", "MÜLLER", "19851231", "f"],
            "a2Ih95zizfS6y6HbsZF9tr9JVgMo6UvZhxFrnxvC6Pa2TzOwouuMTE2uumL7lItGZoAQ9c2FLQcj+iAyMpDn\
             3Yf4ARXfvNgJetSBco3oWQ90/2ryRQj6XTQXZAmigzZtBmkoYZzynYBZJbaLwZqe4RXemn7nRKfPgc8cpNZk\
             rY7/YaLS0IrcyzN6RzkMIRxsXld6OopidwJyNYWr/wPCky7/h1C/eWDXZbsdPStHr5wvaDZP2YhWw3qp4cKl\
             nWd/++q0ojCGKHgLyN8Utbojrgb5CcoMyToCiCQdZsVqSqgU",
        ),
        (
            ["", "O'BRIEN", "2000.01.02", ""],
            "Vx1IM81OAEzLA0uRa2RB8pFz13c1VguPgFoTsZrIa5im4F8ZxnQfFKOoA2tqXTFPdyhfX5xvJpqqoy8C2cxK\
             dUfsNjgkx0/hvRol835sSjjEvUtRrR/vjh7FSn7OF51IoqW4SI5n0qIUIz3h6AyzbAN/p7LdFnx7kqtsEd1E\
             8HZclunlIsu46oS+ORmcRKoMHJ1Wc3QApbKhVS7KJvLRvUxN/m93tbTNQghR43uCYP0Ggto7tiVxKefTkans\
             Rjsidjmhj1wEzrY9tCcZ4aIT3hpurHv67WjYYoWgFjtlfHwt",
        ),
        (
            ["JÖRG", "", "", "X"],
            "EfHODYzLF5kJRFG1nrURgJFQjXA9Mdi92lLCUicObMLCJAAjjXaEMTuh8+w2/CGplwFguRHiFBHgIP+ac/5S\
             YD+u5zLQS1zQqaq4L7qRkoXiXN1Lknf5HPikf7RezqaHGKet3kUJTz0Id+zGUHx/R4I/tLsEHEgxGxeX+P8e\
             dfvh2+EVr9+QlSS66cQDF1wR7dGGcVjgyT6yI77kh+DNzL96eK/z0SXILDEoJts0oa5bUGn86WzlC/OGE6ho\
             zKEkBY9dXKn5r5O/eTk2WMsoVNf2X3udr7BwPx3qPUFoyBip",
        ),
    ];
    for (values, expected) in cases {
        assert_eq!(encoder.encode_base64(&values), expected, "{values:?}");
    }
}

#[test]
fn full_length_where_the_java_library_drops_a_trailing_zero_byte() {
    let encoder = default_vocabulary_encoder(2);
    // Java's `BitSet.toByteArray()` returned 224 bytes for this record: its last byte is zero.
    let java_truncated = "SJXnmA9PeKTj7DphOtUa5W8QDbpMwJTEF1B4eRnXLGA647ESA8lE3XTNzVTz1vcA35zmlDtq4+nz\
        SHucEzUQNzltusgsRk2nnfWHSTkkO3Q8a1yWp8k35wkxr14boDHquJOwXbYjz8SbRI1/8KCrl4THp2hiKHA2UL/6\
        ZMthKmwnZpxI5mb+66/devc3f4RrC1uWKRlxdu+eldfGHmGkZr8nbz4FPUrnf8MEgbu+AfK+8ICkHfkymUiCBDLa\
        oYilgbAePOcKctuKVLhNKrsq3w+b6ZaUIisV4ygGfhySgMg=";
    let java_bytes = base64::engine::general_purpose::STANDARD
        .decode(java_truncated)
        .unwrap();
    assert_eq!(java_bytes.len(), 224);

    let out = encoder.encode(&["A352", "B", "19700101", "m"]);
    assert_eq!(out.len(), 225);
    assert_eq!(out[224], 0);
    assert_eq!(out[..224], java_bytes[..]);
}
