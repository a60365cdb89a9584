//! Tests of the detection drawing module: box outlines, mask blending, thresholds, captions, the
//! bitmap font and PNG writing.

use nextdet_datasets::draw::{
    class_color, draw_detections, draw_rect, draw_text, glyph, save_png, text_size, DrawItem, BOX_THICKNESS,
    GLYPH_HEIGHT, GLYPH_WIDTH, UNKNOWN_GLYPH,
};
use nextdet_datasets::{load_rgb8, RgbImage};

/// A test image whose pixels all differ from their neighbours and from any palette color is
/// unlikely: a smooth gradient with a per-channel offset.
fn gradient(width: usize, height: usize) -> RgbImage {
    let mut data = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            data.extend_from_slice(&[(x * 2 % 256) as u8, (y * 3 % 256) as u8, ((x + y) % 256) as u8]);
        }
    }
    RgbImage::from_raw(width, height, data).unwrap()
}

fn item(bbox: [f32; 4], label: usize, score: f32) -> DrawItem<'static> {
    DrawItem { bbox, label, score, mask: None }
}

fn names() -> Vec<String> {
    ["person", "car", "dog", "cat"].iter().map(|s| s.to_string()).collect()
}

/// Pixels that differ between two images of the same size.
fn changed(a: &RgbImage, b: &RgbImage) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for y in 0..a.height() {
        for x in 0..a.width() {
            if a.pixel(x, y) != b.pixel(x, y) {
                out.push((x, y));
            }
        }
    }
    out
}

#[test]
fn box_outline_takes_class_color_and_interior_stays() {
    let img = gradient(100, 80);
    let out = draw_detections(&img, &[item([20.0, 30.0, 60.0, 70.0], 3, 0.9)], &names(), 0.3);
    let color = class_color(3);
    // The box covers pixel columns 20..=59 and rows 30..=69; the outline is 2 px inside its edges.
    for (x, y) in [(20, 50), (21, 50), (59, 50), (58, 50), (40, 30), (40, 31), (40, 69), (40, 68), (20, 30), (59, 69)] {
        assert_eq!(out.pixel(x, y), Some(color), "outline pixel ({x}, {y})");
    }
    for (x, y) in [(22, 50), (57, 50), (40, 32), (40, 67), (40, 50), (22, 32), (57, 67)] {
        assert_eq!(out.pixel(x, y), img.pixel(x, y), "interior pixel ({x}, {y})");
    }
    for (x, y) in [(19, 50), (60, 50), (40, 70), (71, 29), (30, 18), (10, 10)] {
        assert_eq!(out.pixel(x, y), img.pixel(x, y), "outside pixel ({x}, {y})");
    }
    assert_eq!(img.pixel(20, 50).unwrap().len(), 3);
    assert_ne!(img.pixel(20, 50), Some(color), "the test needs the original to differ from the color");
}

#[test]
fn draw_rect_thickness_and_fractional_box() {
    let mut img = RgbImage::zeros(10, 10);
    // [1.5, 2.2, 7.5, 8.0] covers columns 1..=7, rows 2..=7.
    draw_rect(&mut img, [1.5, 2.2, 7.5, 8.0], [9, 9, 9], 1);
    let set: Vec<(usize, usize)> = changed(&img, &RgbImage::zeros(10, 10));
    let mut expected = Vec::new();
    for y in 2..=7 {
        for x in 1..=7 {
            if x == 1 || x == 7 || y == 2 || y == 7 {
                expected.push((x, y));
            }
        }
    }
    assert_eq!(set, expected);
    assert_eq!(BOX_THICKNESS, 2);
}

#[test]
fn masked_pixel_is_half_blend() {
    let img = gradient(100, 80);
    let mut mask = vec![0u8; 100 * 80];
    for y in 50..60 {
        for x in 30..40 {
            mask[y * 100 + x] = 1;
        }
    }
    let items = [DrawItem { bbox: [10.0, 40.0, 60.0, 75.0], label: 1, score: 0.8, mask: Some(&mask) }];
    let out = draw_detections(&img, &items, &names(), 0.5);
    let color = class_color(1);
    for (x, y) in [(30, 50), (39, 59), (35, 55)] {
        let o = img.pixel(x, y).unwrap();
        // mmdetection: (img * 0.5 + color * 0.5).astype(uint8), i.e. truncation.
        let want: [u8; 3] = std::array::from_fn(|c| (o[c] as f32 * 0.5 + color[c] as f32 * 0.5) as u8);
        assert_eq!(out.pixel(x, y), Some(want), "masked pixel ({x}, {y})");
        assert_ne!(want, o);
    }
    for (x, y) in [(29, 55), (40, 55), (35, 49), (35, 60)] {
        assert_eq!(out.pixel(x, y), img.pixel(x, y), "unmasked interior pixel ({x}, {y})");
    }
    // A mask of the wrong size is ignored rather than panicking; the box is still drawn.
    let short = vec![1u8; 10];
    let items = [DrawItem { bbox: [10.0, 40.0, 60.0, 75.0], label: 1, score: 0.8, mask: Some(&short) }];
    let out2 = draw_detections(&img, &items, &names(), 0.5);
    assert_eq!(out2.pixel(35, 55), img.pixel(35, 55));
    assert_eq!(out2.pixel(10, 55), Some(color));
}

#[test]
fn items_below_threshold_change_nothing() {
    let img = gradient(64, 48);
    let mask = vec![1u8; 64 * 48];
    let items = [
        DrawItem { bbox: [5.0, 20.0, 40.0, 40.0], label: 0, score: 0.29, mask: Some(&mask) },
        item([10.0, 10.0, 30.0, 30.0], 2, f32::NAN),
    ];
    assert_eq!(draw_detections(&img, &items, &names(), 0.3), img);
    // At the threshold an item is drawn.
    let at = [item([5.0, 20.0, 40.0, 40.0], 0, 0.3)];
    assert_ne!(draw_detections(&img, &at, &names(), 0.3), img);
}

#[test]
fn boxes_outside_or_nan_do_not_panic() {
    let img = gradient(50, 40);
    let nothing = [
        item([-50.0, -50.0, -10.0, -10.0], 0, 1.0),
        item([200.0, 10.0, 300.0, 30.0], 1, 1.0),
        item([10.0, 100.0, 30.0, 300.0], 1, 1.0),
        item([f32::NAN, 5.0, 20.0, 20.0], 2, 1.0),
        item([5.0, 5.0, 20.0, f32::NAN], 2, 1.0),
        item([f32::NEG_INFINITY, f32::NEG_INFINITY, -1.0, -1.0], 3, 1.0),
    ];
    assert_eq!(draw_detections(&img, &nothing, &names(), 0.0), img, "boxes wholly outside must not draw");
    let partial = [
        item([-10.0, -10.0, 1000.0, 1000.0], 0, 1.0),
        item([f32::NEG_INFINITY, 3.0, f32::INFINITY, 1e30], 1, 1.0),
        item([45.0, 35.0, 80.0, 90.0], 2, 1.0),
        item([30.0, 20.0, 10.0, 5.0], 3, 1.0), // reversed corners
        item([7.0, 7.0, 7.0, 7.0], 9, 1.0),    // empty box, unknown label
    ];
    let out = draw_detections(&img, &partial, &[], 0.0);
    // The box reaching into the bottom-right corner outlines its visible left and top edges.
    assert_eq!(out.pixel(45, 38), Some(class_color(2)));
    let tiny = RgbImage::zeros(0, 0);
    assert_eq!(draw_detections(&tiny, &partial, &names(), 0.0), tiny);
    let mut one = RgbImage::zeros(1, 1);
    draw_text(&mut one, -3, -3, "hello", [255, 255, 255], 3);
    draw_text(&mut one, i64::MAX - 2, i64::MIN + 2, "hello", [255, 255, 255], 3);
    draw_rect(&mut one, [f32::NAN; 4], [1, 2, 3], 2);
}

#[test]
fn caption_is_drawn_above_box_or_inside_at_top() {
    let img = gradient(120, 100);
    let out = draw_detections(&img, &[item([20.0, 40.0, 90.0, 90.0], 0, 0.87)], &names(), 0.3);
    let color = class_color(0);
    // Scale 1: text 7 px tall plus a 2 px margin each side: rows 29..=39, starting at column 20.
    let above: Vec<_> = changed(&img, &out).into_iter().filter(|&(_, y)| y < 40).collect();
    assert!(!above.is_empty(), "caption must change pixels above the box");
    assert!(above.iter().all(|&(x, y)| (29..40).contains(&y) && x >= 20), "caption rows: {above:?}");
    assert_eq!(out.pixel(20, 29), Some(color), "caption background");
    let (tw, _) = text_size("person|0.87", 1);
    let white = (29..40).flat_map(|y| (20..20 + tw + 4).map(move |x| (x, y)));
    assert!(white.clone().any(|(x, y)| out.pixel(x, y) == Some([255, 255, 255])), "white caption text");
    assert!(white.clone().all(|(x, y)| matches!(out.pixel(x, y), Some(p) if p == color || p == [255, 255, 255])));

    // At the top edge the caption goes inside the box.
    let top = draw_detections(&img, &[item([20.0, 0.0, 90.0, 90.0], 0, 0.87)], &names(), 0.3);
    assert_eq!(top.pixel(21, 5), Some(color), "caption background inside the box");
    assert!((3..10).any(|y| (20..40).any(|x| top.pixel(x, y) == Some([255, 255, 255]))));

    // The caption names the class; an out-of-range label shows its number instead.
    let other = draw_detections(&img, &[item([20.0, 40.0, 90.0, 90.0], 0, 0.87)], &["dog".to_string()], 0.3);
    assert_ne!(other, out);
    let numbered = draw_detections(&img, &[item([20.0, 40.0, 90.0, 90.0], 0, 0.87)], &[], 0.3);
    let mut by_hand = img.clone();
    draw_rect(&mut by_hand, [20.0, 40.0, 90.0, 90.0], color, 2);
    let (tw, th) = text_size("0|0.87", 1);
    nextdet_datasets::draw::fill_rect(&mut by_hand, [20.0, 29.0, 20.0 + tw as f32 + 4.0, 40.0], color);
    assert_eq!(th, 7);
    draw_text(&mut by_hand, 22, 31, "0|0.87", [255, 255, 255], 1);
    assert_eq!(numbered, by_hand);
}

#[test]
fn caption_is_scaled_on_large_images() {
    let small = gradient(599, 800);
    let large = gradient(600, 800);
    let items = [item([100.0, 200.0, 300.0, 400.0], 5, 0.5)];
    let s = draw_detections(&small, &items, &names(), 0.3);
    let l = draw_detections(&large, &items, &names(), 0.3);
    // Scale 1: 11 rows above the box; scale 2: 22 rows.
    assert_eq!(s.pixel(100, 189), Some(class_color(5)));
    assert_eq!(s.pixel(100, 188), small.pixel(100, 188));
    assert_eq!(l.pixel(100, 178), Some(class_color(5)));
    assert_eq!(l.pixel(100, 177), large.pixel(100, 177));
}

#[test]
fn font_glyphs_are_distinct() {
    let printable: Vec<char> = (0x20u8..=0x7e).map(char::from).collect();
    for (i, &a) in printable.iter().enumerate() {
        let ga = glyph(a);
        assert!(ga.iter().all(|row| *row < 1 << GLYPH_WIDTH), "glyph {a:?} wider than {GLYPH_WIDTH}");
        assert_ne!(ga, UNKNOWN_GLYPH, "{a:?} looks like the unknown-character box");
        if a != ' ' {
            assert!(ga.iter().any(|&r| r != 0), "glyph {a:?} is empty");
        }
        for &b in &printable[i + 1..] {
            assert_ne!(ga, glyph(b), "glyphs {a:?} and {b:?} are the same");
        }
    }
    assert_eq!(glyph(' '), [0; GLYPH_HEIGHT]);
    assert_eq!(glyph('é'), UNKNOWN_GLYPH);
    assert_eq!(glyph('\n'), UNKNOWN_GLYPH);

    // Rendering follows the bitmaps: different characters give different pixels, scaled.
    let render = |s: &str, scale: usize| {
        let mut img = RgbImage::zeros(20, 20);
        draw_text(&mut img, 1, 1, s, [255, 255, 255], scale);
        img
    };
    assert_ne!(render("A", 1), render("B", 1));
    assert_ne!(render("1", 1), render("l", 1));
    let a = render("|", 2);
    let lit = changed(&a, &RgbImage::zeros(20, 20));
    // '|' is the middle column of all seven rows: a 2 px wide, 14 px tall bar at scale 2.
    let expected: Vec<_> = (1..15).flat_map(|y| [(5, y), (6, y)]).collect();
    assert_eq!(lit, expected);
    assert_eq!(text_size("ab|", 2), (34, 14));
    assert_eq!(text_size("", 1), (0, 7));
}

#[test]
fn class_colors_are_stable_and_distinct() {
    let colors: Vec<[u8; 3]> = (0..100).map(class_color).collect();
    for i in 0..colors.len() {
        for j in i + 1..colors.len() {
            assert_ne!(colors[i], colors[j], "labels {i} and {j} share a color");
        }
        // Dark enough for white text.
        assert!(colors[i].iter().map(|&c| c as u32).sum::<u32>() < 3 * 230, "label {i}: {:?}", colors[i]);
    }
    assert_eq!(class_color(7), colors[7]);
}

#[test]
fn save_png_round_trips_and_names_bad_path() {
    let dir = tempfile::tempdir().unwrap();
    let img = gradient(37, 23);
    let drawn = draw_detections(&img, &[item([3.0, 12.0, 30.0, 20.0], 1, 0.9)], &names(), 0.3);
    let path = dir.path().join("out.png");
    save_png(&drawn, &path).unwrap();
    assert_eq!(load_rgb8(&path).unwrap(), drawn);

    let bad = dir.path().join("no_such_dir").join("x.png");
    let err = save_png(&drawn, &bad).unwrap_err();
    assert!(err.to_string().contains(&bad.display().to_string()), "{err}");
}
