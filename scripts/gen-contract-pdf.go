//go:build ignore

// gen-contract-pdf writes the sample contracts of examples/contract-qa:
// small, real PDFs (one page, Helvetica text, a correct xref table) that
// Claude, pdftotext and any reader can read. The output is deterministic,
// so regenerating changes nothing unless the text does.
//
//	go run scripts/gen-contract-pdf.go [-out examples/contract-qa/data/contracts]
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf16"
)

// line is one line of the page: a heading (bold), body text, or a blank.
type line struct {
	bold bool
	text string
}

// contract is the text of one customer's agreement.
type contract struct {
	id       string
	customer string
	sections [][2]string // heading, paragraph
}

func contracts() []contract {
	return []contract{
		{
			id:       "C-1001",
			customer: "Northwind Traders GmbH",
			sections: [][2]string{
				{"1. Parties and term",
					"This Service Agreement is made between Example Cloud Ltd (the Provider) and Northwind Traders GmbH " +
						"(the Customer, account C-1001). It takes effect on 1 January 2025, runs for twelve (12) months and renews " +
						"for further twelve-month periods unless either party gives notice under clause 7."},
				{"2. Services",
					"The Provider supplies the hosted order-management platform, its API and the standard integrations, as " +
						"described in Schedule A, to up to 250 named users of the Customer."},
				{"3. Support hours",
					"Support is available Monday to Friday, 08:00–20:00 CET, by e-mail (support@example.com), chat and phone. " +
						"Critical incidents (platform unavailable) are handled 24 hours a day, 7 days a week, with a first response " +
						"within 30 minutes."},
				{"4. Refunds",
					"The Customer may request a full refund of any order within 30 days of delivery, without giving a reason. " +
						"After 30 days, returns are credited to the Customer’s account instead of refunded. This clause replaces " +
						"the 14-day refund period of the Provider’s general terms and FAQ."},
				{"5. Service level",
					"The Provider guarantees 99.9% monthly availability of the platform. For each full 0.1% below that level, " +
						"the Customer receives a service credit of 10% of the monthly fee, up to 50% of that fee."},
				{"6. Fees and payment",
					"The fee is EUR 1,200 per month, invoiced monthly in advance and payable within 30 days of the invoice date."},
				{"7. Termination",
					"Either party may terminate this Agreement with 60 days’ written notice before the end of a term, or at " +
						"once if the other party materially breaches it and does not cure the breach within 30 days of notice."},
				{"8. Governing law",
					"This Agreement is governed by the laws of Germany. The courts of Berlin have exclusive jurisdiction."},
			},
		},
		{
			id:       "C-1002",
			customer: "Contoso Retail BV",
			sections: [][2]string{
				{"1. Parties and term",
					"This Service Agreement is made between Example Cloud Ltd (the Provider) and Contoso Retail BV " +
						"(the Customer, account C-1002). It takes effect on 1 March 2025 and runs for twenty-four (24) months."},
				{"2. Services",
					"The Provider supplies the hosted order-management platform and its API, as described in Schedule A, to up " +
						"to 50 named users of the Customer."},
				{"3. Support hours",
					"Support is available Monday to Friday, 09:00–17:00 CET, by e-mail (support@example.com) and chat, with a " +
						"first response within one business day. There is no out-of-hours support."},
				{"4. Refunds",
					"Refunds follow the Provider’s general terms: unopened items may be returned for a full refund within " +
						"14 days of delivery. Software subscriptions are not refundable once the term has started."},
				{"5. Service level",
					"The Provider aims for 99.5% monthly availability of the platform. No service credits apply."},
				{"6. Fees and payment",
					"The fee is EUR 300 per month, invoiced quarterly in advance and payable within 14 days of the invoice date."},
				{"7. Termination",
					"Either party may terminate this Agreement with 90 days’ written notice, effective at the end of a calendar quarter."},
				{"8. Governing law",
					"This Agreement is governed by the laws of the Netherlands. The courts of Amsterdam have exclusive jurisdiction."},
			},
		},
	}
}

func main() {
	out := flag.String("out", "examples/contract-qa/data/contracts", "the directory to write the PDFs to")
	flag.Parse()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	for _, c := range contracts() {
		pdf, err := render(c)
		if err != nil {
			log.Fatalf("%s: %v", c.id, err)
		}
		path := filepath.Join(*out, c.id+".pdf")
		if err := os.WriteFile(path, pdf, 0o644); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %d bytes\n", path, len(pdf))
	}
}

// Page layout, in points: A4, 60 pt margins.
const (
	pageW, pageH = 595, 842
	margin       = 60
	bodySize     = 10
	leading      = 14
	wrapAt       = 88 // characters per line of 10 pt Helvetica within the margins
	maxLines     = (pageH - 2*margin) / leading
)

func lines(c contract) []line {
	ls := []line{
		{bold: true, text: "Service Agreement — Customer " + c.id},
		{text: c.customer},
		{},
	}
	for _, s := range c.sections {
		ls = append(ls, line{bold: true, text: s[0]})
		for _, l := range wrap(s[1], wrapAt) {
			ls = append(ls, line{text: l})
		}
		ls = append(ls, line{})
	}
	return append(ls,
		line{text: "Signed for the Provider: J. Smith, Head of Sales, Example Cloud Ltd"},
		line{text: "Signed for the Customer: the managing director, " + c.customer},
	)
}

// wrap breaks text into lines of at most width characters, at spaces.
func wrap(text string, width int) []string {
	var out []string
	var cur string
	for _, w := range strings.Fields(text) {
		if cur != "" && len([]rune(cur))+1+len([]rune(w)) > width {
			out = append(out, cur)
			cur = ""
		}
		if cur != "" {
			cur += " "
		}
		cur += w
	}
	if cur != "" {
		out = append(out, cur)
	}
	return out
}

// render lays the contract out on one page and writes the PDF.
func render(c contract) ([]byte, error) {
	ls := lines(c)
	if len(ls) > maxLines {
		return nil, fmt.Errorf("%d lines do not fit on a page of %d", len(ls), maxLines)
	}
	var content bytes.Buffer
	fmt.Fprintf(&content, "BT\n/F1 %d Tf\n%d TL\n%d %d Td\n", bodySize, leading, margin, pageH-margin)
	bold := false
	for i, l := range ls {
		if l.bold != bold {
			if l.bold {
				fmt.Fprintf(&content, "/F2 %d Tf\n", bodySize+1)
			} else {
				fmt.Fprintf(&content, "/F1 %d Tf\n", bodySize)
			}
			bold = l.bold
		}
		s, err := pdfString(l.text)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			content.WriteString("T*\n")
		}
		fmt.Fprintf(&content, "%s Tj\n", s)
	}
	content.WriteString("ET\n")

	title := textString("Service Agreement — Customer " + c.id)
	objects := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		fmt.Sprintf("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources << /Font << /F1 4 0 R /F2 5 0 R >> >> /Contents 6 0 R >>", pageW, pageH),
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%sendstream", content.Len(), content.String()),
		fmt.Sprintf("<< /Title %s /Author (Example Cloud Ltd) /Producer (agentd scripts/gen-contract-pdf.go) >>", title),
	}

	var b bytes.Buffer
	// The comment of high bytes tells transfer tools the file is binary.
	b.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	offsets := make([]int, len(objects))
	for i, o := range objects {
		offsets[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	// Each xref entry is exactly 20 bytes, its end of line included.
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objects)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R /Info 7 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objects)+1, xref)
	return b.Bytes(), nil
}

// pdfString writes s as a PDF literal string in WinAnsiEncoding, the
// encoding of the page's fonts.
func pdfString(s string) (string, error) {
	var b strings.Builder
	b.WriteByte('(')
	for _, r := range s {
		switch {
		case r == '(' || r == ')' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		default:
			code, ok := winAnsi(r)
			if !ok {
				return "", fmt.Errorf("%q has no WinAnsiEncoding code", r)
			}
			fmt.Fprintf(&b, "\\%03o", code)
		}
	}
	b.WriteByte(')')
	return b.String(), nil
}

// textString writes s as a PDF text string outside page content (the
// document information): UTF-16BE with a byte order mark, in hex.
func textString(s string) string {
	var b strings.Builder
	b.WriteString("<FEFF")
	for _, u := range utf16.Encode([]rune(s)) {
		fmt.Fprintf(&b, "%04X", u)
	}
	b.WriteByte('>')
	return b.String()
}

// winAnsi is the WinAnsiEncoding code of the few non-ASCII characters the
// contracts use.
func winAnsi(r rune) (byte, bool) {
	switch r {
	case '—':
		return 0x97, true
	case '–':
		return 0x96, true
	case '’':
		return 0x92, true
	case '‘':
		return 0x91, true
	case '“':
		return 0x93, true
	case '”':
		return 0x94, true
	case '€':
		return 0x80, true
	}
	if r >= 0xa0 && r <= 0xff {
		return byte(r), true // Latin-1 agrees with WinAnsi here
	}
	return 0, false
}
