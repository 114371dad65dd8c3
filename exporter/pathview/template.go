package pathview

// pageHead is the page up to its body; %TITLE% is the escaped title. Sizes in the CSS
// and the SVG are the constants of page.go (HeaderH 76, SectionGap 16, PadX 16,
// DetailsH 168, BoxW 130, BoxH 64, TabH 10, LaneH 156, TitleH 70): change them
// together.
const pageHead = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="referrer" content="no-referrer">
<title>%TITLE%</title>
<style>
html, body { margin: 0; padding: 0; background: #fff; color: #222; font: 13px/18px sans-serif; }
header { height: 76px; box-sizing: border-box; margin: 0; padding: 8px 16px; overflow: hidden; border-bottom: 1px solid #ccc; }
header h1 { font-size: 18px; line-height: 24px; margin: 0; white-space: nowrap; }
header p { margin: 0; white-space: nowrap; }
header p.note { color: #a00; }
section.packet { display: block; margin: 0 0 16px 0; padding: 0 0 0 16px; }
section.packet svg { display: block; }
div.details { height: 168px; box-sizing: border-box; margin: 0; padding: 4px 8px; overflow: auto; border-left: 4px solid #ccc; background: #fafafa; width: max-content; min-width: 600px; max-width: 1200px; }
div.details dl { margin: 0; }
div.details dt { float: left; clear: left; width: 80px; font-weight: bold; }
div.details dd { margin: 0 0 0 88px; }
.lane0 { fill: #f4f6f9; } .lane1 { fill: #e9edf3; }
.lanename { font: bold 13px sans-serif; fill: #333; }
.t1 { font: bold 14px sans-serif; fill: #111; }
.t2 { font: 13px sans-serif; fill: #1a6b1a; }
.t2.bad { fill: #b00; font-weight: bold; }
.t3 { font: 12px sans-serif; fill: #555; }
.box { fill: #eef3f9; stroke: #4a78b5; stroke-width: 1; }
.tab { fill: #4a78b5; }
.label { font: bold 13px sans-serif; fill: #111; }
.sub, .delta { font: 11px sans-serif; fill: #333; }
.delta { fill: #555; }
.hop.drop .box, .hop.drop .tab { fill: #d62728; stroke: #d62728; }
.hop.stall .box, .hop.stall .tab { fill: #f0a30a; stroke: #f0a30a; }
.hop.lost .box, .hop.lost .tab { fill: #8c1c8c; stroke: #8c1c8c; }
.hop.drop .label, .hop.drop .sub, .hop.drop .delta, .hop.lost .label, .hop.lost .sub, .hop.lost .delta { fill: #fff; }
.marktext { font: 11px sans-serif; fill: #a00; }
.tunnel { font: 11px sans-serif; fill: #205080; }
.nat { font: bold 11px sans-serif; fill: #6a2c91; }
.natmark { fill: #6a2c91; }
.link { stroke: #777; stroke-width: 1.5; fill: none; }
.cross { stroke: #205080; stroke-width: 2.5; fill: none; stroke-dasharray: 8 4; }
.cross.lost { stroke: #8c1c8c; }
.crosstext { font: 11px sans-serif; fill: #205080; }
</style>
</head>
<body>
`

// The body is written by writeBody, not by html/template: a template's reflection
// keeps every exported method of every type in the binary (the linker cannot drop
// them), which made pathtrace 40 MB bigger and its resident memory 28 MiB more.
